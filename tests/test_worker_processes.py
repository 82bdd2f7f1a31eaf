"""Real ``hitstream worker`` processes on the real Redis and chdb stores: crashes (SIGKILL),
an unavailable store, poison records and drops. Competing workers killed at random on one
store: tests/test_worker_scale_out.py (embedded) and tests/test_faults_http.py (server)."""

from __future__ import annotations

import fcntl
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import redis
import rq
from rq.worker import WorkerStatus

from shared import keys
from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, add_exclusion
from shared.envelope import Envelope
from shared.keys import BATCH_QUEUE
from shared.lanes import LANE_KEYS, Lane
from tests.procs import Processes, Worker, drained, signal_a_thread_other_than_main, stored_pages, wait_until
from tests.traffic import queued_envelope
from workers.batch import dead_letters

# The worker's log line for each retry of an unavailable store (workers.batch.delivery).
STORE_RETRIED = ": store unavailable, retrying in "
SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"
IP = "198.51.100.23"


def envelope(path: str = "/", visitor_ip: str = IP) -> Envelope:
    return queued_envelope(SITE, f"https://example.com{path}", visitor_ip)


def send(client: redis.Redis, envelopes: list[Envelope], lane: Lane = Lane.LIVE) -> list[str]:
    with client.pipeline(transaction=False) as pipe:
        for env in envelopes:
            pipe.xadd(LANE_KEYS[lane].stream, {keys.ENVELOPE_FIELD: env.to_json(), keys.TOKEN_FIELD: "sender"})
        pipe.hincrby(LANE_KEYS[lane].queued_by_token, "sender", len(envelopes))  # as the API counts them
        pipe.execute()
    return [env.page_id for env in envelopes]


def kill_inside_a_batch(client: redis.Redis, worker: Worker, lane: Lane = Lane.LIVE) -> None:
    """SIGKILL the worker while it holds a claimed batch of ``lane`` (a lease exists only then)."""
    leases = LANE_KEYS[lane].leases
    wait_until(lambda: client.zcard(leases) > 0, 20, f"a claimed batch in the {lane} lane")
    worker.kill()
    assert client.zcard(leases) > 0, "the kill landed between batches"


def test_pageviews_drops_and_poison_records(processes: Processes, real_redis: redis.Redis, tmp_path: Path) -> None:
    add_exclusion(real_redis, INSTANCE_SCOPE, ExclusionKind.PATH, "/private")
    kept = send(real_redis, [envelope("/a"), envelope("/b"), envelope("/privately")])
    send(real_redis, [envelope("/private"), envelope("/private/x"), envelope("/private/y")])
    poison = real_redis.xadd(
        keys.STREAM, {keys.ENVELOPE_FIELD: envelope("x").to_json().replace(b"https://example.comx", b"http://[::1/x")}
    )
    worker = processes.worker(tmp_path / "store")

    wait_until(lambda: drained(real_redis), 20, "the queue to drain")
    assert worker.stop() == 0

    pages, drops = stored_pages(tmp_path / "store")
    assert pages == Counter(kept)
    assert drops == {"instance_path": 3}
    (letter,) = dead_letters.list_dead_letters(real_redis)
    assert (letter.id, letter.step) == (poison.decode(), "url")
    assert IP not in letter.to_json().decode()


def waits_for_a_job(client: redis.Redis, worker: Worker) -> bool:
    """``worker``'s RQ worker is idle, and no job is queued: its main thread waits in RQ's read
    for the next one."""
    ours = [registered for registered in rq.Worker.all(connection=client) if registered.pid == worker.pid]
    idle = bool(ours) and all(registered.get_state() == WorkerStatus.IDLE for registered in ours)
    return idle and rq.Queue(BATCH_QUEUE, connection=client).count == 0


def test_a_sigterm_that_a_thread_other_than_the_main_one_takes_still_stops_the_worker_warm(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    worker = processes.worker(tmp_path / "store")
    worker.wait_ready(real_redis)
    sent = send(real_redis, [envelope(f"/{n}") for n in range(5)])
    wait_until(lambda: drained(real_redis), 20, "the queue to drain")  # the store's threads run
    wait_until(lambda: waits_for_a_job(real_redis, worker), 20, "the worker to wait for its next job")

    signal_a_thread_other_than_main(worker.pid, signal.SIGTERM)

    assert worker.process.wait(30) == 0
    assert "warm shut down requested" in worker.output()
    assert stored_pages(tmp_path / "store")[0] == Counter(sent)


@pytest.mark.parametrize("lane", [Lane.LIVE, Lane.BULK])
def test_sigkill_mid_batch_loses_and_doubles_nothing(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, lane: Lane
) -> None:
    sent = send(real_redis, [envelope(f"/{n}") for n in range(10_000)], lane)
    store = tmp_path / "store"

    kill_inside_a_batch(real_redis, processes.worker(store, batch_size=2500), lane)
    worker = processes.worker(store, batch_size=2500)
    wait_until(lambda: drained(real_redis), 40, "recovery")
    assert worker.stop() == 0

    pages, _ = stored_pages(store)
    assert pages == Counter(sent)
    assert real_redis.zcard(LANE_KEYS[lane].leases) == 0
    assert real_redis.hlen(LANE_KEYS[lane].queued_by_token) == 0  # each entry counted off exactly once


def test_store_unavailable_then_back_stores_everything_once(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # What chdb itself does while another process has the database open: an exclusive lock
    # on <path>/status. The worker cannot open the store until the lock goes.
    status = os.open(store / "status", os.O_RDWR | os.O_CREAT)
    fcntl.flock(status, fcntl.LOCK_EX)
    sent = send(real_redis, [envelope(f"/{n}") for n in range(5000)])
    worker = processes.worker(store, batch_size=1000)

    # The job has met the locked store and keeps retrying its batch (backoff 0.1, 0.2, 0.4 s):
    # while it does, it holds at most that batch, the one processed next and the one claimed
    # ahead (workers.runtime.jobs); every other envelope waits unclaimed in the stream.
    wait_until(lambda: worker.output().count(STORE_RETRIED) >= 3, 60, "the worker to retry the locked store")
    assert real_redis.xlen(keys.STREAM) == 5000 and 1 <= real_redis.zcard(keys.BATCH_LEASES) <= 3
    assert real_redis.xpending(keys.STREAM, keys.GROUP)["pending"] <= 3000
    fcntl.flock(status, fcntl.LOCK_UN)
    os.close(status)

    wait_until(lambda: drained(real_redis), 30, "the queue to drain")
    assert worker.stop() == 0
    pages, _ = stored_pages(store)
    assert pages == Counter(sent)
