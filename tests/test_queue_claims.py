"""Batch claims on the real Redis stream: claim, lease, ack, release, whole re-claim.

Leases run on Redis's clock: a test waits for a lease to expire by watching Redis count it
expired (shared.backlog), never by sleeping past it."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.client

from shared import keys
from shared.backlog import queue_backlog
from shared.config import Settings
from tests.procs import wait_until
from workers.batch.queue import BatchQueue
from workers.runtime.context import redis_client


def fill(client: redis.Redis, count: int) -> list[str]:
    return [client.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: f'{{"n": {n}}}'}).decode() for n in range(count)]


def test_claim_takes_up_to_batch_size_in_stream_order(real_redis: redis.Redis) -> None:
    ids = fill(real_redis, 5)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)

    first = queue.claim(batch_size=3)
    second = queue.claim(batch_size=3)

    assert first is not None and second is not None
    assert [entry.id for entry in first.entries] == ids[:3]
    assert [entry.id for entry in second.entries] == ids[3:]
    assert first.entries[0].data == b'{"n": 0}'
    assert first.id.startswith("b:") and first.id != second.id
    assert not first.reclaimed
    assert queue.claim(batch_size=3) is None


def test_empty_stream_claims_nothing_and_leaves_no_consumer(real_redis: redis.Redis) -> None:
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)

    assert queue.claim(batch_size=10) is None
    assert real_redis.xinfo_consumers(keys.STREAM, keys.GROUP) == []
    assert real_redis.zcard(keys.BATCH_LEASES) == 0


def test_ack_removes_entries_lease_and_consumer(real_redis: redis.Redis) -> None:
    fill(real_redis, 4)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    batch = queue.claim(batch_size=10)
    assert batch is not None

    queue.ack(batch)

    assert real_redis.xlen(keys.STREAM) == 0
    assert real_redis.zcard(keys.BATCH_LEASES) == 0
    assert real_redis.xinfo_consumers(keys.STREAM, keys.GROUP) == []


def test_expired_batch_is_reclaimed_whole_under_the_same_id(real_redis: redis.Redis) -> None:
    fill(real_redis, 7)
    queue = BatchQueue(real_redis, claim_timeout_seconds=1.0)
    lost = queue.claim(batch_size=5)  # its worker "dies": no heartbeat, no ack
    assert lost is not None

    other = queue.claim(batch_size=5)  # the other 2, lease still valid for `lost`
    assert other is not None and len(other.entries) == 2
    queue.ack(other)  # stored by a live worker (else two leases could expire with the same deadline)
    wait_until(lambda: queue_backlog(real_redis).expired_batches == 1, 10, "the lost batch's lease to expire")
    recovered = queue.claim(batch_size=5)

    assert recovered is not None and recovered.reclaimed
    assert recovered.id == lost.id
    assert recovered.entries == lost.entries


def test_reclaim_recovers_batches_larger_than_the_current_batch_size(real_redis: redis.Redis) -> None:
    fill(real_redis, 1200)
    queue = BatchQueue(real_redis, claim_timeout_seconds=0.1)
    lost = queue.claim(batch_size=1200)
    wait_until(lambda: queue_backlog(real_redis).expired_batches == 1, 10, "the lost batch's lease to expire")

    recovered = queue.claim(batch_size=10)

    assert recovered is not None and recovered.id == lost.id
    assert len(recovered.entries) == 1200


def lease_deadline(client: redis.Redis, batch_id: str) -> tuple[int, int]:
    """Redis's clock and the batch's lease deadline (ms), read in one transaction."""
    with client.pipeline(transaction=True) as pipe:
        (seconds, micros), deadline = pipe.time().zscore(keys.BATCH_LEASES, batch_id).execute()
    return seconds * 1000 + micros // 1000, int(deadline)


# Heartbeats come every third of the claim timeout, so a lease is lost only if a beat is two
# thirds of it late: 1 s here, far beyond any scheduling delay of a thread that only sleeps.
HEARTBEAT_CLAIM_TIMEOUT = 1.5


def test_heartbeat_keeps_a_slow_batch_from_being_reclaimed(real_redis: redis.Redis) -> None:
    fill(real_redis, 3)
    queue = BatchQueue(real_redis, claim_timeout_seconds=HEARTBEAT_CLAIM_TIMEOUT)
    batch = queue.claim(batch_size=10)
    assert batch is not None
    _, first_deadline = lease_deadline(real_redis, batch.id)

    with queue.leases_kept() as held:
        held.add(batch.id)
        # The batch outlives its first lease: Redis's clock passes that deadline while the
        # lease, renewed by the heartbeats, still runs.
        wait_until(lambda: lease_deadline(real_redis, batch.id)[0] > first_deadline, 30, "the first lease's end")
        now, deadline = lease_deadline(real_redis, batch.id)
        assert now < deadline
        assert queue.claim(batch_size=10) is None

    # No heartbeat once the batch is let go: its lease runs out and it is re-claimed whole.
    wait_until(lambda: queue_backlog(real_redis).expired_batches == 1, 30, "the lease to expire")
    recovered = queue.claim(batch_size=10)
    assert recovered is not None and recovered.id == batch.id and recovered.reclaimed


def test_released_batch_is_reclaimed_immediately(real_redis: redis.Redis) -> None:
    fill(real_redis, 2)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    batch = queue.claim(batch_size=10)
    assert batch is not None

    queue.release(batch.id)

    again = queue.claim(batch_size=10)
    assert again is not None and again.id == batch.id and again.reclaimed


def test_heartbeat_after_ack_does_not_resurrect_the_lease(real_redis: redis.Redis) -> None:
    fill(real_redis, 1)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    batch = queue.claim(batch_size=10)
    queue.ack(batch)

    queue.heartbeat(batch.id)

    assert real_redis.zcard(keys.BATCH_LEASES) == 0


@pytest.mark.parametrize("arriving_before_the_retry", [0, 3], ids=["nothing-new", "new-entries"])
def test_a_claim_whose_reply_was_lost_is_retried_with_every_entry_it_took(
    redis_url: str, real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, arriving_before_the_retry: int
) -> None:
    """Redis ran the claim's transaction, then the connection broke before its reply arrived
    (Redis killed or failed over between its fsync and the reply, a network cut): the
    worker's client sends the same transaction again, under the same batch id. The batch it
    gets must hold the entries the lost reply carried, or acknowledging it deletes the
    consumer and leaves them in the stream, delivered to nobody, for ever."""
    ids = fill(real_redis, 4)
    client = redis_client(Settings(redis_url=redis_url))  # a worker's client: it retries
    lost_replies = []
    original = redis.client.Pipeline._execute_transaction

    def reply_lost_once(pipe: redis.client.Pipeline, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        reply = original(pipe, connection, commands, raise_on_error)  # Redis has run it
        if not lost_replies:
            lost_replies.append(reply)
            ids.extend(fill(real_redis, arriving_before_the_retry))
            raise redis.ConnectionError("the connection broke before the reply was read")
        return reply

    monkeypatch.setattr(redis.client.Pipeline, "_execute_transaction", reply_lost_once)
    queue = BatchQueue(client, claim_timeout_seconds=60)

    batch = queue.claim(batch_size=10)

    assert lost_replies, "the claim's first reply was lost and the transaction sent again"
    assert batch is not None
    assert sorted(entry.id for entry in batch.entries) == sorted(ids)
    queue.ack(batch)
    assert real_redis.xlen(keys.STREAM) == 0
    assert real_redis.zcard(keys.BATCH_LEASES) == 0
