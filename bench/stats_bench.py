"""``hitstream stats`` while workers start, drain a backlog and stop: how long each call takes
and how it ends, per phase, for both worker shapes on an embedded store.

    .venv/bin/python -m bench.stats_bench [--pageviews 200000] [--processes 1,2]
        [--baseline-code /path/to/another/checkout]

Starts its own Redis (AOF on, free port). For each worker shape (``-n 1``: one process;
``-n 2``: two enrichers and the writer that owns the store) on a fresh chdb path: migrates,
appends ``--pageviews`` pageviews to the live lane, then runs ``hitstream stats --json`` once
a second (tests/stats_calls.py) through these phases: no worker; the worker starting on the
backlog (until its store owner registers with RQ); draining (until every pageview is stored
and acknowledged); idle (5 calls); stopping (SIGTERM until it exited); stopped (3 calls). Each
call's wall time is the whole command, Python's start included; the command's own time (from
the CLI's entry to its exit: what ``--wait`` bounds, plus reading a store it opens itself) and
the imports before it are timed inside the process too (bench/stats_timed.py).

Same-run baselines: ``hitstream --help`` (what starting any command costs on this machine
now), and with ``--baseline-code`` the same phases with the commands of another checkout
(its directory first on PYTHONPATH: the code before a change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import redis
import rq

from bench.bench_redis import start_redis
from shared import keys
from shared.control.sites import add_site
from shared.lanes import LANE_KEYS, Lane
from tests.procs import HITSTREAM, Commands, drained
from tests.stats_calls import StatsOperator, latency_line
from tests.traffic import queued_envelope

DOMAIN = "example.com"
PHASES = ("no worker", "starting", "draining", "idle", "stopping", "stopped")


def fill_lane(client: redis.Redis, site_id: str, count: int) -> None:
    lane = LANE_KEYS[Lane.LIVE]
    for start in range(0, count, 10_000):
        size = min(10_000, count - start)
        with client.pipeline(transaction=False) as pipe:
            for n in range(start, start + size):
                envelope = queued_envelope(site_id, f"https://{DOMAIN}/{n % 500}", "198.51.100.23")
                pipe.xadd(lane.stream, {keys.ENVELOPE_FIELD: envelope.to_json(), keys.TOKEN_FIELD: "sender"})
            pipe.hincrby(lane.queued_by_token, "sender", size)
            pipe.execute()


def wait(condition: Callable[[], bool], what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_shape(client: redis.Redis, env: dict[str, str], data: Path, processes: int, pageviews: int, label: str) -> None:
    client.flushall()
    store = data / f"store-{label}-{processes}"
    times = data / f"times-{label}-{processes}.txt"
    env = {**env, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}", "STATS_TIMES": str(times)}
    subprocess.run([HITSTREAM, "migrate"], env=env, check=True, capture_output=True)
    site = add_site(client, DOMAIN)
    fill_lane(client, site.id, pageviews)
    operator = StatsOperator(Commands(), env, DOMAIN, (sys.executable, str(Path(__file__).with_name("stats_timed.py"))))
    operator.start()
    log = open(data / f"worker-{label}-{processes}.log", "wb")  # noqa: SIM115 (closed below)
    worker = None
    try:
        wait(lambda: len(operator.calls_in("no worker")) >= 2, "calls without a worker")
        operator.phase = "starting"
        worker = subprocess.Popen([HITSTREAM, "worker", "-n", str(processes)], env=env, stdout=log, stderr=log)
        store_queue = rq.Queue(keys.STORE_QUEUE, connection=client)
        wait(lambda: rq.Worker.count(connection=client, queue=store_queue) > 0, "the store's owner to register")
        operator.phase = "draining"
        drain_started = time.monotonic()
        wait(lambda: drained(client) and client.xlen(keys.ENRICHED_STREAM) == 0, "the drain")
        drain_seconds = time.monotonic() - drain_started
        operator.phase = "idle"
        wait(lambda: len(operator.calls_in("idle")) >= 5, "calls on an idle worker")
        operator.phase = "stopping"
        worker.terminate()
        worker.wait(120)
        operator.phase = "stopped"
        wait(lambda: len(operator.calls_in("stopped")) >= 3, "calls after the stop")
    finally:
        operator.stop()
        if worker is not None and worker.poll() is None:
            worker.kill()
        log.close()
    print(f"{label}: worker -n {processes}, {pageviews} pageviews drained in {drain_seconds:.1f} s", flush=True)
    timed = [tuple(map(float, line.split())) for line in times.read_text().splitlines()]
    own = dict(zip(operator.calls, timed, strict=False))  # calls are sequential: line i is call i
    for phase in PHASES:
        print("  " + latency_line(phase, operator.calls_in(phase)))
        print("  " + own_time_line(phase, [own[call] for call in operator.calls_in(phase) if call in own]))
    print("  " + latency_line("all", operator.calls))
    print("  " + own_time_line("all", list(own.values())))
    for line in sorted({f"{call.phase}: {(call.reason or call.stderr.strip())[:300]}" for call in operator.calls}):
        if line.split(": ", 1)[1]:
            print(f"    {line}")
    figures = [call.pageviews for call in operator.calls if call.pageviews is not None]
    print(f"  last figure {figures[-1] if figures else None} of {pageviews}", flush=True)


def own_time_line(label: str, timed: list[tuple[float, ...]]) -> str:
    """The command's own time (p50, p99, max) and its imports' (p50) of the ``timed`` calls."""
    if not timed:
        return f"{'':<34} (not timed)"
    command = sorted(seconds for _, seconds in timed)
    p99 = command[min(len(command) - 1, round(0.99 * (len(command) - 1)))]
    return (
        f"{'':<34} inside: command p50 {statistics.median(command):5.2f} s  p99 {p99:5.2f} s"
        f"  max {command[-1]:5.2f} s; imports p50 {statistics.median(imports for imports, _ in timed):5.2f} s"
    )


def command_start_seconds(env: dict[str, str], rounds: int = 5) -> list[float]:
    seconds = []
    for _ in range(rounds):
        started = time.monotonic()
        subprocess.run([HITSTREAM, "--help"], env=env, check=True, capture_output=True)
        seconds.append(time.monotonic() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pageviews", type=int, default=200_000)
    parser.add_argument("--processes", default="1,2", help="worker shapes, comma-separated")
    parser.add_argument("--baseline-code", type=Path, help="another checkout, run the same way as the baseline")
    arguments = parser.parse_args()
    shapes = [int(value) for value in arguments.processes.split(",")]
    codes = {"this code": Path.cwd()}
    if arguments.baseline_code:
        codes["baseline code"] = arguments.baseline_code.resolve()
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stats-bench-")))
        server = start_redis(stack, data / "redis", "always")
        client = redis.Redis.from_url(server.url)
        base_env = {**os.environ, "HITSTREAM_REDIS_URL": server.url, "HITSTREAM_LOG_LEVEL": "WARNING"}
        for processes in shapes:
            for label, code in codes.items():
                env = {**base_env, "PYTHONPATH": str(code)}
                start = command_start_seconds(env)
                print(f"{label}: hitstream --help, median of 5: {statistics.median(start):.2f} s", flush=True)
                run_shape(client, env, data, processes, arguments.pageviews, label)


if __name__ == "__main__":
    main()
