"""Another tenant's latency with and without four throttled clients posting 1 MiB batches.

    .venv/bin/python -m bench.noisy_neighbour [--seconds 10] [--rate 50]

Starts its own Redis (AOF, free port) and one ``hitstream api`` with the default rate limit
(100 items/s, burst 200 per token). The tenant posts single pageviews open-loop at ``--rate``
per second with its own token (well inside its budget); latency is measured from each
request's scheduled send time. Phase 1: the tenant alone. Phase 2, same run, same API: four
clients sharing one other token post 1000-item, ~1 MiB batches back to back, so their bucket
is spent (in debt) nearly all the time and most of their batches are answered 429.
Prints the tenant's median and p99 per phase, the noisy clients' answers and the API's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import psutil
import redis

from hitstream.redis_server import RedisServer
from ingest_api.batch import MAX_BATCH_BYTES, MAX_BATCH_ITEMS
from ingest_api.openapi import BATCH_PATH
from shared import keys
from tests.ports import free_port
from tests.procs import Processes
from tests.traffic import _Connection, ingest_token, pageview

NOISY_CLIENTS = 4


def megabyte_batch(host: str) -> bytes:
    """1000 valid items padded (in the user agent) to just under 1 MiB."""
    items = [orjson.loads(pageview(number, host)[1]) for number in range(MAX_BATCH_ITEMS)]
    pad = (MAX_BATCH_BYTES - len(orjson.dumps(items))) // MAX_BATCH_ITEMS - 1
    for item in items:
        item["user_agent"] += " " + "x" * pad
    body = orjson.dumps(items)
    assert MAX_BATCH_BYTES - 2 * MAX_BATCH_ITEMS < len(body) <= MAX_BATCH_BYTES
    return body


async def noisy_client(port: int, secret: str, body: bytes, until: float, answers: Counter[int]) -> None:
    """Posts ``body`` to the batch endpoint back to back on one keep-alive connection."""
    request = (
        f"POST {BATCH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
            )
            await reader.readexactly(length)
            answers[int(head.split(b" ", 2)[1])] += 1
    finally:
        writer.close()


async def tenant(port: int, secret: str, rate: float, seconds: float) -> tuple[list[float], Counter[int]]:
    """Open-loop single pageviews at ``rate``/s over a few connections; latency in ms."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    idle: list[_Connection] = []

    async def one(number: int, scheduled: float) -> None:
        connection = idle.pop() if idle else _Connection("127.0.0.1", port, secret, timeout=30)
        body = pageview(number)[1]
        try:
            status, _ = await connection.post(body)
        except (OSError, asyncio.IncompleteReadError):  # idle past the keep-alive time: closed
            status, _ = await connection.post(body)  # on a new connection
        latencies.append((time.perf_counter() - scheduled) * 1000)
        statuses[status] += 1
        idle.append(connection)

    started = time.perf_counter()
    sent: list[asyncio.Task[None]] = []
    for number in range(int(rate * seconds)):
        scheduled = started + number / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        sent.append(asyncio.ensure_future(one(number, scheduled)))
    await asyncio.gather(*sent)
    for connection in idle:
        connection.close()
    return latencies, statuses


def noisy_clients(port: int, secret: str, seconds: float, answers: multiprocessing.Queue) -> None:
    """The four throttled clients, in a process of their own (writing 1 MiB bodies back to back
    would otherwise slow the tenant's own event loop and be counted as API latency)."""
    body = megabyte_batch("noisy.example")
    counted: Counter[int] = Counter()
    until = time.monotonic() + seconds

    async def run() -> None:
        await asyncio.gather(*(noisy_client(port, secret, body, until, counted) for _ in range(NOISY_CLIENTS)))

    asyncio.run(run())
    answers.put(dict(counted))


def phase(
    port: int, secret: str, rate: float, seconds: float, noisy_secret: str | None
) -> tuple[list[float], Counter[int], dict[int, int]]:
    answers: multiprocessing.Queue = multiprocessing.Queue()
    noisy = None
    if noisy_secret is not None:
        noisy = multiprocessing.Process(target=noisy_clients, args=(port, noisy_secret, seconds + 2, answers))
        noisy.start()
        time.sleep(2.0)  # the noisy bucket is spent by now
    latencies, statuses = asyncio.run(tenant(port, secret, rate, seconds))
    if noisy is None:
        return latencies, statuses, {}
    noisy_answers = answers.get(timeout=60)
    noisy.join()
    return latencies, statuses, noisy_answers


def report(name: str, latencies: list[float], statuses: Counter[int]) -> None:
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{name}: tenant p50 {statistics.median(latencies):.1f} ms, p99 {cuts[98]:.1f} ms, "
        f"{len(latencies)} requests, answers {dict(statuses)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="tenant requests per second")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        server = RedisServer(port=free_port(), data_dir=Path(data_dir))
        server.start()
        processes = Processes({**os.environ, "HITSTREAM_REDIS_URL": server.url}, Path(data_dir))
        try:
            client = redis.Redis.from_url(server.url)
            secret = ingest_token(client)
            noisy_secret = ingest_token(client, "noisy.example")
            api = processes.api()
            cpu = psutil.Process(api.pid)

            def measured(noisy: str | None) -> tuple[list[float], Counter[int], dict[int, int], float]:
                client.delete(keys.STREAM)
                before = cpu.cpu_times()
                result = phase(api.port, secret, arguments.rate, arguments.seconds, noisy)
                after = cpu.cpu_times()
                return *result, (after.user + after.system - before.user - before.system)

            quiet, quiet_statuses, _, quiet_cpu = measured(None)
            loud, loud_statuses, noisy_answers, loud_cpu = measured(noisy_secret)
            print(
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
                f"{os.getloadavg()[0]:.1f}, one API process, tenant at {arguments.rate:g} requests/s"
            )
            report("alone", quiet, quiet_statuses)
            report(f"with {NOISY_CLIENTS} throttled 1 MiB clients", loud, loud_statuses)
            print(
                f"noisy batches answered: {noisy_answers}; API CPU: alone {quiet_cpu:.2f} s, "
                f"with noisy clients {loud_cpu:.2f} s"
            )
            print(f"median ratio (with / alone): {statistics.median(loud) / statistics.median(quiet):.2f}x")
        finally:
            processes.kill_all()
            server.stop()


if __name__ == "__main__":
    main()
