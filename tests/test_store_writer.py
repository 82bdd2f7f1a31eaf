"""The store writer (workers.batch.store_writer) in this process, on the real Redis and a chdb
store: every batch handed to it is stored once, whatever became of the replies to its reads."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from shared import keys
from shared.config import Settings
from shared.lanes import LANE_KEYS, Lane
from tests.procs import drained, wait_until
from tests.stores import query
from tests.traffic import queued_envelope
from tests.worker_context import worker_context_for
from workers.batch.delivery import PassToWriter
from workers.batch.enrichment import enrich
from workers.batch.queue import BatchQueue
from workers.batch.store_writer import StoreWriter
from workers.pipeline import build_pipeline
from workers.runtime.context import redis_client
from workers.store.store import Store

SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"


def hand_off(client: redis.Redis, batches: int, batch_size: int) -> list[str]:
    """What enrichers do: ``batches`` batches claimed, enriched and passed to the writer."""
    envelopes = [
        queued_envelope(SITE, f"https://example.com/{n}", "198.51.100.23") for n in range(batches * batch_size)
    ]
    with client.pipeline(transaction=True) as pipe:
        for env in envelopes:
            pipe.xadd(LANE_KEYS[Lane.LIVE].stream, {keys.ENVELOPE_FIELD: env.to_json(), keys.TOKEN_FIELD: "sender"})
        pipe.hincrby(LANE_KEYS[Lane.LIVE].queued_by_token, "sender", len(envelopes))
        pipe.execute()
    queue = BatchQueue(client, claim_timeout_seconds=60)
    pipeline = build_pipeline(Settings())
    passing = PassToWriter(client, threading.Event())
    for _ in range(batches):
        batch = queue.claim(batch_size)
        assert batch is not None
        passing.deliver(enrich(batch, pipeline))
    return [env.page_id for env in envelopes]


@pytest.mark.parametrize("batches", [1, 3], ids=["nothing-new-for-the-retry", "more-batches-for-the-retry"])
def test_a_read_whose_reply_was_lost_leaves_no_batch_behind(
    redis_url: str, real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, store: Store, batches: int
) -> None:
    """Redis delivered a batch to the writer's read of new batches, then the connection broke
    before the reply arrived (Redis frozen past the socket timeout, a network cut): the
    writer's patient client sends the read again, which gets the next batch or none. The lost
    batch is pending for the writer's consumer, and only a read from "0" returns it."""
    sent = hand_off(real_redis, batches, batch_size=2)
    client = redis_client(Settings(redis_url=redis_url))  # a worker's client: it retries
    lost_replies = []
    original = redis.Redis._send_command_parse_response

    def reply_lost_once(self: redis.Redis, connection: Any, command_name: str, *args: Any, **options: Any) -> Any:
        reply = original(self, connection, command_name, *args, **options)  # Redis has run it
        if command_name == "XREADGROUP" and ">" in args and reply and not lost_replies:
            lost_replies.append(reply)
            raise redis.ConnectionError("the connection broke before the reply was read")
        return reply

    monkeypatch.setattr(redis.Redis, "_send_command_parse_response", reply_lost_once)
    context = worker_context_for(client, store)
    writer = StoreWriter(client, context.storing, context.shutdown_requested)
    writer.start()
    try:
        wait_until(lambda: drained(real_redis) and real_redis.xlen(keys.ENRICHED_STREAM) == 0, 30, "every batch stored")
    finally:
        writer.stopped.set()
        writer.join(10)

    assert lost_replies, "a read's reply was lost and the read sent again"
    assert sorted(query(store, "SELECT toString(page_id) FROM pageviews")) == sorted((page,) for page in sent)
    assert real_redis.xpending(keys.ENRICHED_STREAM, keys.ENRICHED_GROUP)["pending"] == 0
