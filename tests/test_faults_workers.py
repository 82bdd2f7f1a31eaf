"""Fault suite, workers and store: real ``hitstream api`` and ``hitstream worker`` processes on
the suite's Redis and a chdb store, while pageviews flow through the API.

Each test ends with the exact count check: every page_id answered 202 is stored exactly
once, and nothing else is stored.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.backlog import queue_backlog
from shared.lanes import Lane
from tests.procs import Processes, drained, stored_pages, wait_until
from tests.traffic import BackgroundTraffic, exact_count, ingest_token

pytestmark = pytest.mark.faults

FLOW_PAGEVIEWS = 50_000
STORE_DOWN_SECONDS = 30.0


def live_leases(client: redis.Redis) -> int:
    """Claimed batches whose lease has not expired: a worker is inside them now."""
    return client.zcount(keys.BATCH_LEASES, int(time.time() * 1000), "+inf")


def test_workers_killed_repeatedly_while_50000_pageviews_flow(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    secret = ingest_token(real_redis)
    store = tmp_path / "store"
    api = processes.api()
    worker = processes.worker(store, batch_size=500)
    started = time.monotonic()
    traffic = BackgroundTraffic(api.url, secret, FLOW_PAGEVIEWS)

    kills, kills_mid_batch = 0, 0
    while traffic.running():
        # Let the new worker get to work for a while, then crash it.
        worker.wait_ready(real_redis)
        time.sleep(random.uniform(0.05, 0.5))
        # A batch of 500 is claimed for only ~50 ms at full speed: aim the kill at one.
        aim_until = time.monotonic() + 5
        while live_leases(real_redis) == 0 and time.monotonic() < aim_until:
            time.sleep(0.002)
        kills_mid_batch += live_leases(real_redis) > 0
        worker.kill()
        kills += 1
        worker = processes.worker(store, batch_size=500)
    answers = traffic.wait()
    worker.wait_ready(real_redis)
    posted = time.monotonic()
    backlog = real_redis.xlen(keys.STREAM)

    wait_until(lambda: drained(real_redis), 120, "the queue to drain after the last kill", interval=0.2)
    print(f"posting took {posted - started:.1f} s; {backlog} queued then, drained in {time.monotonic() - posted:.1f} s")
    assert worker.stop() == 0
    figures = exact_count("workers SIGKILLed repeatedly", answers, stored_pages(store)[0])
    print(f"worker SIGKILLs: {kills}, of them while a batch was claimed: {kills_mid_batch}")
    assert answers.summary() == {202: FLOW_PAGEVIEWS}
    assert kills_mid_batch >= 3
    assert (figures.stored, figures.duplicated, figures.lost) == (FLOW_PAGEVIEWS, 0, 0)


def test_store_unavailable_for_30_seconds_mid_flow(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    secret = ingest_token(real_redis)
    store = tmp_path / "store"
    api = processes.api()
    worker = processes.worker(store, batch_size=500)
    traffic = BackgroundTraffic(api.url, secret, 10**9, concurrency=2)
    worker.wait_ready(real_redis)
    wait_until(lambda: queue_backlog(real_redis).lanes[Lane.LIVE].acknowledged_total > 0, 60, "pageviews to be stored")

    # An embedded chdb store is unavailable while another process holds it: chdb takes an
    # exclusive flock on <path>/status. The worker is restarted into that state (a chdb
    # worker owns the lock itself while it runs, so it cannot appear under a running one).
    assert worker.stop() == 0
    status = os.open(store / "status", os.O_RDWR | os.O_CREAT)
    fcntl.flock(status, fcntl.LOCK_EX)
    worker = processes.worker(store, batch_size=500)
    try:
        queued_before = real_redis.xlen(keys.STREAM)
        time.sleep(STORE_DOWN_SECONDS)  # the fault's length; what it did is waited for below, still in it

        def riding_it_out() -> bool:
            return (
                real_redis.xlen(keys.STREAM) > queued_before  # pageviews kept being accepted
                and real_redis.zcard(keys.BATCH_LEASES) >= 1  # the worker holds its batch while it waits
                and ("store not available" in worker.output() or "store unavailable" in worker.output())
            )

        wait_until(riding_it_out, 60, "the worker to wait for the store with its batch while pageviews queue")
        assert worker.running()
    finally:
        fcntl.flock(status, fcntl.LOCK_UN)
        os.close(status)
    answers = traffic.stop()
    recovery_started = time.monotonic()
    wait_until(lambda: drained(real_redis), 60, "the queue to drain once the store is back", interval=0.2)
    recovery = time.monotonic() - recovery_started
    assert worker.stop() == 0

    figures = exact_count("store unavailable 30 s", answers, stored_pages(store)[0])
    print(f"store unavailable {STORE_DOWN_SECONDS:.0f} s; queue drained {recovery:.1f} s after it came back")
    assert set(answers.summary()) == {202}
    assert (figures.duplicated, figures.lost, figures.unanswered_but_stored) == (0, 0, 0)
