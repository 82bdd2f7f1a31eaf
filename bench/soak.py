"""Soak: API and worker together for a long run at 70% of the measured maximum.

    python -m bench.soak --minutes 10      (--minutes 1 for a quick check)

Starts its own Redis (AOF), one ``hitstream api`` and one ``hitstream worker`` on a fresh
chdb store. First a short closed-loop ramp measures the maximum accepted rate; then an
open-loop generator sends at 70% of it (requests leave on schedule whether or not earlier
ones were answered, so latency includes queueing). Every few seconds it samples queue depth
and each process's RSS. Prints throughput, p50/p99 latency, the queue depth series and RSS
at start and end with growth (the target: no more than 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from tests.ports import free_port
from tests.procs import Processes, stored_pages, wait_until
from tests.traffic import (
    UNLIMITED,
    Answers,
    _Connection,
    ingest_token,
    pageview,
    post_pageviews,
)

SAMPLE_SECONDS = 5.0
RAMP_SECONDS = 10.0
CONNECTIONS = 64


async def measure_maximum(url: str, secret: str) -> float:
    answers = Answers()
    started = time.monotonic()
    task = asyncio.create_task(post_pageviews(url, secret, 10**9, CONNECTIONS, answers))
    await asyncio.sleep(RAMP_SECONDS)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return len(answers.accepted()) / (time.monotonic() - started)


async def open_loop(url: str, secret: str, rate: float, seconds: float, answers: Answers) -> None:
    """Send at ``rate`` per second on schedule, over a pool of connections."""
    host, port = url.removeprefix("http://").split(":")
    idle = asyncio.Queue[_Connection]()
    for _ in range(CONNECTIONS * 4):
        idle.put_nowait(_Connection(host, int(port), secret, timeout=10))
    pending: set[asyncio.Task[None]] = set()

    async def send(number: int, scheduled: float) -> None:
        connection = await idle.get()
        page_id, body = pageview(number)
        try:
            status, _ = await connection.post(body)
            answers.by_page[page_id] = status
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            answers.by_page[page_id] = type(error).__name__
        answers.latencies.append(time.monotonic() - scheduled)  # from when it should have left
        idle.put_nowait(connection)

    started = time.monotonic()
    number = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while number < due:
            task = asyncio.create_task(send(number, started + number / rate))
            pending.add(task)
            task.add_done_callback(pending.discard)
            number += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*pending)


WARM_UP_SECONDS = 60


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


async def soak(minutes: float, work_dir: Path) -> None:
    server = RedisServer(free_port(), work_dir / "redis")
    server.start()
    client = redis.Redis.from_url(server.url)
    processes = Processes({**os.environ, "HITSTREAM_REDIS_URL": server.url, **UNLIMITED}, work_dir)
    try:
        secret = ingest_token(client)
        api = processes.api()
        worker = processes.worker(work_dir / "store", claim_timeout=30)
        worker.wait_ready(client)
        maximum = await measure_maximum(api.url, secret)
        wait_until(lambda: client.xlen(keys.STREAM) == 0, 300, "the ramp's backlog to drain", interval=0.5)
        rate = 0.7 * maximum
        print(
            f"maximum accepted rate (closed loop, {CONNECTIONS} connections): {maximum:.0f}/s; soaking at {rate:.0f}/s"
        )

        pids = {"api": api.pid, "worker": worker.pid, "redis": server.process.pid}  # type: ignore[union-attr]
        start_rss = {name: rss_mb(pid) for name, pid in pids.items()}
        answers = Answers()
        depths: list[tuple[float, int]] = []
        warm_rss: dict[str, float] = {}
        load = asyncio.create_task(open_loop(api.url, secret, rate, minutes * 60, answers))
        started = time.monotonic()
        while not load.done():
            depths.append((time.monotonic() - started, client.xlen(keys.STREAM)))
            if not warm_rss and time.monotonic() - started >= WARM_UP_SECONDS:
                warm_rss = {name: rss_mb(pid) for name, pid in pids.items()}
            await asyncio.wait([load], timeout=SAMPLE_SECONDS)
        await load
        elapsed = time.monotonic() - started
        end_rss = {name: rss_mb(pid) for name, pid in pids.items()}
        seen_pattern = keys.SEEN.format(kind="*", site_id="*", item="*")
        seen_keys = sum(1 for _ in client.scan_iter(match=seen_pattern, count=10_000))
        wait_until(lambda: client.xlen(keys.STREAM) == 0, 300, "the queue to drain", interval=0.5)
        worker.stop()
        pages, _ = stored_pages(work_dir / "store")
    finally:
        processes.kill_all()
        server.stop()

    latencies = sorted(answers.latencies)
    accepted = answers.accepted()
    print(f"sent {len(answers.by_page)} in {elapsed:.0f} s: {dict(answers.summary())}")
    print(f"throughput {len(accepted) / elapsed:.0f} accepted/s (target {rate:.0f}/s)")
    print(
        f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    print("queue depth (s: depth): " + ", ".join(f"{at:.0f}: {depth}" for at, depth in depths))
    # Growth is judged from the end of the warm-up (caches, connection pools and allocator
    # arenas fill in the first minute); the figure from the very start is printed too.
    for name in pids:
        warm = warm_rss.get(name, start_rss[name])
        print(
            f"rss {name}: start {start_rss[name]:.0f} MB, after {WARM_UP_SECONDS} s {warm:.0f} MB, "
            f"end {end_rss[name]:.0f} MB: {(end_rss[name] - warm) / warm * 100:+.1f}% after warm-up "
            f"({(end_rss[name] - start_rss[name]) / start_rss[name] * 100:+.1f}% from start)"
        )
    # Redis grows by design: every client-chosen page_id is remembered for the idempotency
    # window (HITSTREAM_IDEMPOTENCY_WINDOW, ~190 MiB per million ids), then expires.
    print(f"idempotency keys in Redis at the end: {seen_keys}")
    lost = len(accepted - pages.keys())
    print(f"stored {sum(pages.values())}, duplicated {sum(pages.values()) - len(pages)}, lost {lost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hitstream-soak-") as work_dir:
        asyncio.run(soak(args.minutes, Path(work_dir)))


if __name__ == "__main__":
    main()
