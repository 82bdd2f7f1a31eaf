"""Events/s of one worker process, end to end, next to the naive design in the same run.

    .venv/bin/python -m bench.worker_bench [--pageviews 100000] [--naive 2000] [--batch-size 1000]

Starts its own Redis (AOF on, free port). Batch design: pre-fills the stream with envelopes
(realistic user-agent mix from bench/ua_mix.py, varied paths, referrers, UTM tags and IPs),
starts ONE ``hitstream worker`` process on a fresh chdb path and times from its first claim
(the worker has opened its store and built its pipeline by then) until the stream is empty
(the last ack follows the last insert), then checks the row count in the store. Naive
design: one RQ job per pageview, each running the same pipeline and one single-row insert,
in one RQ SimpleWorker process on another fresh chdb path. Prints both rates and their
ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from rq import Queue, SimpleWorker

from bench.ua_mix import user_agent_stream
from hitstream.redis_server import RedisServer
from shared import keys
from shared.envelope import Envelope
from tests.ports import free_port
from workers import runtime
from workers.pipeline import StepFailed
from workers.records import PageviewRow

NAIVE_QUEUE = "bench-naive"
SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"
REFERRERS = [None, None, None, "https://www.google.com/", "https://news.ycombinator.com/", "https://example.com/"]
PATHS = ["/", "/pricing", "/blog/queues", "/docs/install?utm_source=newsletter&utm_medium=email", "/about"]

COUNT_ROWS = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print(client.query("SELECT count() FROM pageviews").result_rows[0][0])
"""


def envelopes(count: int) -> list[bytes]:
    rng = random.Random(11)
    now = int(time.time() * 1000)
    return [
        Envelope(
            site_id=SITE,
            site_domain="example.com",
            page_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            timestamp_ms=now - rng.randrange(86_400_000),
            received_ms=now,
            url=f"https://example.com{rng.choice(PATHS)}",
            visitor_ip=f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            user_agent=user_agent,
            referrer=rng.choice(REFERRERS),
            language="en-US",
            screen_width=1920,
            screen_height=1080,
            viewport_width=1280,
            viewport_height=720,
        ).to_json()
        for user_agent in user_agent_stream(count)
    ]


def fill_stream(client: redis.Redis, data: list[bytes]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for n, payload in enumerate(data):
            pipe.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: payload})
            if n % 5000 == 4999:
                pipe.execute()
        pipe.execute()


def stored_rows(path: Path) -> int:
    output = subprocess.run([sys.executable, "-c", COUNT_ROWS, str(path)], capture_output=True, text=True, check=True)
    return int(output.stdout.strip().splitlines()[-1])


def batch_design(client: redis.Redis, env: dict[str, str], store: Path, count: int, batch_size: int) -> float:
    fill_stream(client, envelopes(count))
    worker_env = {**env, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}", "HITSTREAM_BATCH_SIZE": str(batch_size)}
    hitstream = str(Path(sys.executable).parent / "hitstream")
    process = subprocess.Popen(
        [hitstream, "worker"], env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while client.zcard(keys.BATCH_LEASES) == 0 and client.xlen(keys.STREAM) == count:
            time.sleep(0.001)
        started = time.perf_counter()
        while client.xlen(keys.STREAM) > 0:
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)
    rows = stored_rows(store)
    if rows != count:
        raise SystemExit(f"batch design stored {rows} rows for {count} pageviews")
    return count / elapsed


def naive_job(payload: bytes) -> None:
    """The naive design: one job per pageview, one single-row insert each."""
    try:
        outcome = runtime.pipeline().process(Envelope.from_json(payload))
    except StepFailed:
        return
    if isinstance(outcome, PageviewRow):
        runtime.current_store().write_batch(str(uuid.uuid4()), [outcome], [])


def run_naive_worker() -> None:
    """In a child process: warm the pipeline and store, then drain the naive queue (burst)."""
    client = runtime.redis_client()
    runtime.pipeline()
    runtime.current_store()
    count = Queue(NAIVE_QUEUE, connection=client).count
    started = time.perf_counter()
    SimpleWorker([Queue(NAIVE_QUEUE, connection=client)], connection=client).work(burst=True, logging_level="WARNING")
    print(count / (time.perf_counter() - started))


def naive_design(client: redis.Redis, env: dict[str, str], store: Path, count: int) -> float:
    naive_queue = Queue(NAIVE_QUEUE, connection=client)
    jobs = [Queue.prepare_data(naive_job, args=(payload,), result_ttl=0) for payload in envelopes(count)]
    for start in range(0, count, 1000):
        naive_queue.enqueue_many(jobs[start : start + 1000])
    worker_env = {**env, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}"}
    output = subprocess.run(
        [sys.executable, "-m", "bench.worker_bench", "--naive-worker"],
        env=worker_env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = stored_rows(store)
    if rows != count:
        raise SystemExit(f"naive design stored {rows} rows for {count} pageviews")
    return float(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pageviews", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=2000, help="pageviews for the naive design")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_worker:
        run_naive_worker()
        return

    with tempfile.TemporaryDirectory(prefix="hitstream-worker-bench-") as scratch:
        workdir = Path(scratch)
        server = RedisServer(port=free_port(), data_dir=workdir / "redis")
        server.start()
        try:
            client = redis.Redis.from_url(server.url)
            env = {**os.environ, "HITSTREAM_REDIS_URL": server.url, "HITSTREAM_LOG_LEVEL": "WARNING"}
            batch_rate = batch_design(client, env, workdir / "batch-store", args.pageviews, args.batch_size)
            naive_rate = naive_design(client, env, workdir / "naive-store", args.naive)
        finally:
            server.stop()
    print(
        f"batch design : {args.pageviews} pageviews, batch size {args.batch_size}, 1 worker process: "
        f"{batch_rate:,.0f} events/s"
    )
    print(
        f"naive design : {args.naive} pageviews, one RQ job + one insert each, 1 worker process: "
        f"{naive_rate:,.0f} events/s"
    )
    print(f"ratio        : {batch_rate / naive_rate:.1f}x  (targets: >= 10,000 events/s per process, >= 20x)")


if __name__ == "__main__":
    main()
