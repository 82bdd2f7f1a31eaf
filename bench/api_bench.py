"""Throughput and latency of one ingest API process against a no-op Starlette endpoint,
and items/s of the batch endpoint with 100-item batches.

    .venv/bin/python -m bench.api_bench [--seconds 10] [--rounds 3] [--connections 64]
                                        [--baseline-tree DIR]

The no-op and the ingest endpoint are measured in alternating rounds (no-op, ingest, no-op,
...) and the ratio is taken per round, then its median: this machine's speed drifts by 10-30%
from minute to minute, and a pair of runs close in time sees the same drift.

``--baseline-tree DIR`` is the A/B switch: DIR is another checkout of hitstream (e.g.
``git worktree add /tmp/base <commit>``, or ``git archive <commit> | tar -x -C DIR``) whose
ingest API, run by this virtualenv's Python with DIR first on the import path, is measured in
every round beside this tree's, so two designs (the Redis client, the routing) are compared in
the same run: the script prints this tree's throughput and CPU per request over the baseline's.

Starts its own Redis (AOF on, free port), creates a site, a token and an owner grant through
shared.control, serves the real API (``hitstream api``: one uvicorn worker, uvloop,
httptools) and the no-op app (bench/api_noop.py) on the same stack, and drives both with
``wrk`` posting the same realistic body; then the batch endpoint gets that body 100 times
per request. The stream is emptied between runs so Redis memory stays bounded. The rate
limit is raised out of the way (this measures the hand-off, not the 429 path); everything
else uses the defaults. Needs ``wrk`` (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token
from shared.lanes import LANE_KEYS, Lane
from tests.ports import free_port

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
BATCH_ITEMS = 100
BASELINE = "baseline ingest"


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_us_per_request: float  # server CPU time / requests: stable even on a busy machine
    redis_cpu_us_per_request: float  # Redis's CPU time / requests (Redis shares the 2 cores)


def realistic_body() -> bytes:
    return orjson.dumps(
        {
            "url": "https://www.example.com/blog/queue-decoupled-ingest?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "visitor_ip": "2001:db8:85a3::8a2e:370:7334",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36",
            "referrer": "https://news.ycombinator.com/item?id=40000000",
            "language": "en-GB",
            "session_id": "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0",
            "screen_width": 2560,
            "screen_height": 1440,
            "viewport_width": 1280,
            "viewport_height": 720,
        }
    )


def serve(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
            return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command[0]} did not start on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(control: redis.Redis) -> float:
    info = control.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_wrk(
    url: str, env: dict[str, str], seconds: int, connections: int, server_pid: int, control: redis.Redis
) -> Result:
    cpu_before = cpu_seconds(server_pid)
    redis_cpu_before = redis_cpu_seconds(control)
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(BENCH_DIR / "api_post.lua"),
            url,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu_used = cpu_seconds(server_pid) - cpu_before
    redis_cpu_used = redis_cpu_seconds(control) - redis_cpu_before
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return Result(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_latency_ms(output, "50%"),
        p99_ms=_latency_ms(output, "99%"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        cpu_us_per_request=cpu_used / requests * 1e6,
        redis_cpu_us_per_request=redis_cpu_used / requests * 1e6,
    )


def _latency_ms(output: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {percentile} latency in wrk's output:\n{output}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="no-op/ingest pairs")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--baseline-tree", type=Path, help="another hitstream checkout whose ingest API is measured in every round too"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    with tempfile.TemporaryDirectory(prefix="api-bench-") as data_dir:
        server = RedisServer(port=free_port(), data_dir=Path(data_dir))
        server.start()
        try:
            control = redis.Redis.from_url(server.url)
            site = add_site(control, "example.com")
            secret, token = create_token(control, "api-bench")
            grant(control, token.id, site.id, "owner")
            body = realistic_body()
            env = {
                **os.environ,
                "HITSTREAM_REDIS_URL": server.url,
                "HITSTREAM_RATE_LIMIT": "1000000000",
                "HITSTREAM_RATE_BURST": "1000000000",
                # Nothing drains the queue here: without these the batch rounds met the token's
                # share of the lane (250,000 entries) within seconds and measured 503s.
                "HITSTREAM_QUEUE_MAX_DEPTH": "100000000",
                "HITSTREAM_TOKEN_QUEUE_SHARE": "1",
                "API_BENCH_TOKEN": secret,
            }
            batch_body = b"[" + b",".join([body] * BATCH_ITEMS) + b"]"
            api_port, noop_port = free_port(), free_port()
            # The same uvicorn settings as `hitstream api` (hitstream/commands/api.py), but uvicorn's plain
            # httptools protocol: the ratio includes the connection guard (ingest_api.connections).
            stack = [
                "--workers",
                "1",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--no-proxy-headers",
                "--no-server-header",
            ]
            servers = {
                "no-op Starlette": (
                    [
                        str(VENV_BIN / "uvicorn"),
                        "api_noop:app",
                        "--app-dir",
                        str(BENCH_DIR),
                        "--port",
                        str(noop_port),
                        *stack,
                    ],
                    f"http://127.0.0.1:{noop_port}/noop",
                    body,
                ),
                "ingest endpoint": (
                    [str(VENV_BIN / "hitstream"), "api", "--port", str(api_port)],
                    f"http://127.0.0.1:{api_port}/api/ingest/server/pageview",
                    body,
                ),
                "batch endpoint": (
                    [str(VENV_BIN / "hitstream"), "api", "--port", str(api_port)],
                    f"http://127.0.0.1:{api_port}/api/ingest/server/pageviews",
                    batch_body,
                ),
            }
            if args.baseline_tree:
                # `python -m` from inside the tree: its packages come before this tree's install.
                servers[BASELINE] = (
                    ["env", "-C", str(args.baseline_tree.resolve()), sys.executable, "-m", "hitstream", "api"]
                    + ["--port", str(api_port)],
                    f"http://127.0.0.1:{api_port}/api/ingest/server/pageview",
                    body,
                )
            queued: dict[str, int] = {}

            def forget_queue() -> None:
                # The stream and the token's count in it go together: with the count left
                # behind, the token's share of the lane filled up by the fifth round (503s).
                control.delete(keys.STREAM, LANE_KEYS[Lane.LIVE].queued_by_token)

            def measure(name: str) -> Result:
                command, url, posted = servers[name]
                port = int(url.split(":")[2].split("/")[0])
                run_env = {**env, "API_BENCH_BODY": posted.decode()}
                process = serve(command, port, run_env)
                try:
                    run_wrk(url, run_env, 2, args.connections, process.pid, control)  # warm-up
                    forget_queue()
                    return run_wrk(url, run_env, args.seconds, args.connections, process.pid, control)
                finally:
                    process.terminate()
                    process.wait()
                    queued[name] = control.xlen(keys.STREAM)
                    forget_queue()

            # Rounds measure a warm Redis: one untimed ingest run first, while Redis faults in
            # memory and grows its AOF file (without it the first ingest round was the slowest).
            measure("ingest endpoint")
            runs: dict[str, list[Result]] = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name in ("no-op Starlette", "ingest endpoint", BASELINE):
                    if name in servers:
                        runs[name].append(measure(name))
            runs["batch endpoint"].append(measure("batch endpoint"))
        finally:
            server.stop()

    print(f"{'run':<20}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'CPU us/req':>12}{'Redis us/req':>14}")
    for name, results in runs.items():
        for number, result in enumerate(results, 1):
            print(
                f"{name + ' ' + str(number):<20}{result.requests_per_second:>10.0f}{result.p50_ms:>9.2f}"
                f"{result.p99_ms:>9.2f}{result.non_2xx:>9}{result.cpu_us_per_request:>12.1f}"
                f"{result.redis_cpu_us_per_request:>14.1f}"
            )
    pairs = list(zip(runs["no-op Starlette"], runs["ingest endpoint"], strict=True))
    throughput = [api.requests_per_second / noop.requests_per_second for noop, api in pairs]
    cpu = [noop.cpu_us_per_request / api.cpu_us_per_request for noop, api in pairs]
    print(
        "ingest / no-op throughput per round: "
        + ", ".join(f"{ratio:.2f}x" for ratio in throughput)
        + f"; median {statistics.median(throughput):.2f}x (target >= 0.60x)"
    )
    print(
        "no-op / ingest server CPU per request, per round: "
        + ", ".join(f"{ratio:.2f}x" for ratio in cpu)
        + f"; median {statistics.median(cpu):.2f}x"
    )
    single = statistics.median(result.requests_per_second for result in runs["ingest endpoint"])
    [batch] = runs["batch endpoint"]
    batch_items_per_second = batch.requests_per_second * BATCH_ITEMS
    print(
        f"batch endpoint, {BATCH_ITEMS}-item batches: {batch_items_per_second:.0f} items/s, "
        f"{batch_items_per_second / single:.1f}x the single endpoint's median req/s, "
        f"server CPU {batch.cpu_us_per_request / BATCH_ITEMS:.1f} us/item"
    )
    if runs.get(BASELINE):
        pairs = list(zip(runs[BASELINE], runs["ingest endpoint"], strict=True))
        throughput = [api.requests_per_second / base.requests_per_second for base, api in pairs]
        cpu = [api.cpu_us_per_request / base.cpu_us_per_request for base, api in pairs]
        baseline_ratio = [
            base.requests_per_second / noop.requests_per_second
            for noop, base in zip(runs["no-op Starlette"], runs[BASELINE], strict=True)
        ]
        print(
            f"this tree / baseline ({args.baseline_tree}) throughput per round: "
            + ", ".join(f"{ratio:.2f}x" for ratio in throughput)
            + f"; median {statistics.median(throughput):.2f}x; server CPU per request: median "
            + f"{statistics.median(cpu):.2f}x; baseline / no-op throughput: median "
            + f"{statistics.median(baseline_ratio):.2f}x"
        )
    print(f"envelopes queued in Redis by each server's last run: {queued}")


if __name__ == "__main__":
    main()
