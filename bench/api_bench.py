"""Throughput and latency of one ingest API process against a no-op Starlette endpoint,
and items/s of the batch endpoint with 100-item batches.

    .venv/bin/python -m bench.api_bench [--seconds 10] [--rounds 3] [--connections 64]
                                        [--baseline-tree DIR] [--modes relaxed,fsync,replicated]

The no-op and the ingest endpoint are measured in alternating rounds (no-op, ingest, no-op,
...) and the ratio is taken per round, then its median: this machine's speed drifts by 10-30%
from minute to minute, and a pair of runs close in time sees the same drift.

``--baseline-tree DIR`` is the A/B switch: DIR is another checkout of hitstream (e.g.
``git worktree add /tmp/base <commit>``, or ``git archive <commit> | tar -x -C DIR``) whose
ingest API, run by this virtualenv's Python with DIR first on the import path, is measured in
every round beside this tree's, so two designs (the Redis client, the routing) are compared in
the same run: the script prints this tree's throughput and CPU per request over the baseline's.

``--modes`` compares the durability modes (shared.durability) instead: what each costs the
single endpoint and the batch endpoint. Each mode gets its own Redis server(s), started here
(bench/bench_redis.py): ``relaxed`` one with ``appendfsync everysec``, ``fsync`` one with
``appendfsync always``, ``replicated`` that and one replica on this machine
(``HITSTREAM_MIN_REPLICAS=1``). In each round the single endpoint is measured in every mode,
then the batch endpoint; the modes' order rotates from round to round. Prints each run,
each mode's medians, and its throughput over relaxed's in the same round (and its p99 minus
relaxed's), per round and their median. "items/s" counts the items of 2xx answers only (a
503 queued nothing) and the ratios compare those; Redis CPU counts the replica's too, and
"req/call" is requests per hand-off script call (Redis's commandstats).
With ``--baseline-tree`` too, the baseline tree's API is measured in every mode as well (on
the same Redis servers; "fsync base" beside "fsync"), its ratios also to this tree's relaxed.
``--batch-connections`` sets wrk's connections for the batch endpoint apart (default: as
``--connections``): 64 connections of 100-item batches keep 6,400 items in flight, which a
busy machine answers past the 250 ms Redis timeout (503s in every mode).

Starts its own Redis (AOF on, free port), creates a site, a token and an owner grant through
shared.control, serves the real API (``hitstream api``: one uvicorn worker, uvloop,
httptools) and the no-op app (bench/api_noop.py) on the same stack, and drives both with
``wrk`` posting the same realistic body; then the batch endpoint gets that body 100 times
per request. The stream is emptied between runs so Redis memory stays bounded. The rate
limit is raised out of the way (this measures the hand-off, not the 429 path); everything
else uses the defaults. Redis rewrites its AOF between runs, never during one (bench/bench_redis.py).
Needs ``wrk`` (apt-get install -y wrk).
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
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import redis

from bench.bench_redis import rewrite_aof, start_mode, start_redis
from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token
from shared.durability import Durability
from shared.lanes import LANE_KEYS, Lane
from tests.ports import free_port

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
BATCH_ITEMS = 100
BASELINE = "baseline ingest"
BASELINE_SUFFIX = " base"  # --modes with --baseline-tree: "fsync base" is the baseline tree's API in fsync mode
# --modes: each endpoint's path and the items in each request it is sent.
ENDPOINTS = {
    "single": ("/api/ingest/server/pageview", 1),
    "batch": ("/api/ingest/server/pageviews", BATCH_ITEMS),
}
# The target for the default mode against relaxed, same round.
FSYNC_TARGET_RATIO = 0.85
FSYNC_TARGET_P99_MS = 5.0


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    accepted_per_second: float  # 2xx answers only: a 503 queued nothing
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_us_per_request: float  # server CPU time / requests: stable even on a busy machine
    redis_cpu_us_per_request: float  # Redis's CPU time / requests (Redis shares the 2 cores)
    requests_per_call: float  # requests / hand-off script calls (EVALSHA) in Redis


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


def provision(control: redis.Redis) -> str:
    """A site, a token with an owner grant on it; the token's secret."""
    site = add_site(control, "example.com")
    secret, token = create_token(control, "api-bench")
    grant(control, token.id, site.id, "owner")
    return secret


def api_env(redis_url: str, secret: str) -> dict[str, str]:
    return {
        **os.environ,
        "HITSTREAM_REDIS_URL": redis_url,
        "HITSTREAM_RATE_LIMIT": "1000000000",
        "HITSTREAM_RATE_BURST": "1000000000",
        # Nothing drains the queue here: without these the batch rounds met the token's
        # share of the lane (250,000 entries) within seconds and measured 503s.
        "HITSTREAM_QUEUE_MAX_DEPTH": "100000000",
        "HITSTREAM_TOKEN_QUEUE_SHARE": "1",
        "API_BENCH_TOKEN": secret,
    }


def forget_queue(control: redis.Redis, servers: Sequence[redis.Redis]) -> None:
    """Empty the live lane, then rewrite the AOF of ``servers`` (a replica's too) so their files
    stay small and no rewrite happens during a run."""
    # The stream and the token's count in it go together: with the count left behind, the
    # token's share of the lane filled up by the fifth round (503s).
    control.delete(keys.STREAM, LANE_KEYS[Lane.LIVE].queued_by_token)
    for server in servers:
        rewrite_aof(server)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(servers: Sequence[redis.Redis]) -> float:
    total = 0.0
    for server in servers:
        info = server.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def script_calls(control: redis.Redis) -> int:
    return int(control.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def run_wrk(
    url: str, env: dict[str, str], seconds: int, connections: int, server_pid: int, servers: Sequence[redis.Redis]
) -> Result:
    """One wrk run; ``servers``: the Redis servers behind the API, the primary first."""
    cpu_before = cpu_seconds(server_pid)
    redis_cpu_before = redis_cpu_seconds(servers)
    calls_before = script_calls(servers[0])
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
    redis_cpu_used = redis_cpu_seconds(servers) - redis_cpu_before
    calls = script_calls(servers[0]) - calls_before
    non_2xx_found = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(non_2xx_found.group(1)) if non_2xx_found else 0
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    requests_per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return Result(
        requests_per_second=requests_per_second,
        accepted_per_second=requests_per_second * (requests - non_2xx) / requests,
        p50_ms=_latency_ms(output, "50%"),
        p99_ms=_latency_ms(output, "99%"),
        non_2xx=non_2xx,
        cpu_us_per_request=cpu_used / requests * 1e6,
        redis_cpu_us_per_request=redis_cpu_used / requests * 1e6,
        requests_per_call=requests / calls if calls else 0.0,
    )


def _latency_ms(output: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {percentile} latency in wrk's output:\n{output}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def measure_api(
    command: list[str],
    url: str,
    env: dict[str, str],
    seconds: int,
    connections: int,
    control: redis.Redis,
    servers: Sequence[redis.Redis],
    on_stop: Callable[[], None] = lambda: None,
) -> Result:
    """Start the server ``command`` (listening on ``url``'s port), warm it up for 2 s, then one
    timed wrk run; the queue is emptied after each (``on_stop`` runs before that)."""
    port = int(url.split(":")[2].split("/")[0])
    process = serve(command, port, env)
    try:
        run_wrk(url, env, 2, connections, process.pid, servers)  # warm-up
        forget_queue(control, servers)
        return run_wrk(url, env, seconds, connections, process.pid, servers)
    finally:
        process.terminate()
        process.wait()
        on_stop()
        forget_queue(control, servers)


def print_runs(runs: dict[str, list[Result]], items: Callable[[str], int]) -> None:
    print(
        f"{'run':<24}{'req/s':>9}{'items/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}{'CPU us/req':>11}"
        f"{'Redis us/req':>13}{'req/call':>9}"
    )
    for name, results in runs.items():
        for number, result in enumerate(results, 1):
            print(
                f"{name + ' ' + str(number):<24}{result.requests_per_second:>9.0f}"
                f"{result.accepted_per_second * items(name):>9.0f}{result.p50_ms:>8.2f}{result.p99_ms:>8.2f}"
                f"{result.non_2xx:>8}{result.cpu_us_per_request:>11.1f}{result.redis_cpu_us_per_request:>13.1f}"
                f"{result.requests_per_call:>9.1f}"
            )


def compare_to_noop(args: argparse.Namespace, data_dir: Path) -> None:
    """The default comparison: the ingest endpoint (and a baseline tree's) against the no-op app."""
    with ExitStack() as stack:
        server = start_redis(stack, data_dir, "always")
        control = redis.Redis.from_url(server.url)
        body = realistic_body()
        env = api_env(server.url, provision(control))
        batch_body = b"[" + b",".join([body] * BATCH_ITEMS) + b"]"
        api_port, noop_port = free_port(), free_port()
        # The same uvicorn settings as `hitstream api` (hitstream/commands/api.py), but uvicorn's plain
        # httptools protocol: the ratio includes the connection guard (ingest_api.connections).
        stack_options = [
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
                    *stack_options,
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

        def measure(name: str) -> Result:
            command, url, posted = servers[name]
            run_env = {**env, "API_BENCH_BODY": posted.decode()}

            def count_queued() -> None:
                queued[name] = control.xlen(keys.STREAM)

            connections = args.batch_connections if name == "batch endpoint" else args.connections
            return measure_api(command, url, run_env, args.seconds, connections, control, [control], count_queued)

        # Rounds measure a warm Redis: one untimed ingest run first, while Redis faults in
        # memory (without it the first ingest round was the slowest).
        measure("ingest endpoint")
        runs: dict[str, list[Result]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name in ("no-op Starlette", "ingest endpoint", BASELINE):
                if name in servers:
                    runs[name].append(measure(name))
        runs["batch endpoint"].append(measure("batch endpoint"))

    print_runs(runs, lambda name: BATCH_ITEMS if name == "batch endpoint" else 1)
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
    batch_items_per_second = batch.accepted_per_second * BATCH_ITEMS
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


@dataclass(frozen=True)
class ModeRedis:
    """One durability mode's Redis server(s) and the API's environment for it."""

    clients: list[redis.Redis]  # the primary first, then its replica
    env: dict[str, str]


def compare_modes(args: argparse.Namespace, modes: list[Durability], data_dir: Path) -> None:
    """The durability modes side by side (and the baseline tree's API in each mode too, with
    ``--baseline-tree``): single and batch endpoint, alternating rounds."""
    body = realistic_body()
    bodies = {"single": body, "batch": b"[" + b",".join([body] * BATCH_ITEMS) + b"]"}
    trees: dict[str, Path | None] = {"": None}
    if args.baseline_tree:
        trees[BASELINE_SUFFIX] = args.baseline_tree.resolve()
    variants = [(mode, suffix) for suffix in trees for mode in modes]
    with ExitStack() as stack:
        targets: dict[Durability, ModeRedis] = {}  # both trees' API of a mode use its Redis
        for mode in modes:
            servers = start_mode(stack, data_dir, mode)
            clients = [redis.Redis(host=server.host, port=server.port) for server in servers]
            env = api_env(servers[0].url, provision(clients[0]))
            env["HITSTREAM_DURABILITY"] = str(mode)
            if mode is Durability.REPLICATED:
                env["HITSTREAM_MIN_REPLICAS"] = str(len(servers) - 1)
            targets[mode] = ModeRedis(clients, env)

        def measure(mode: Durability, suffix: str, endpoint: str) -> Result:
            path, _ = ENDPOINTS[endpoint]
            port = free_port()
            clients = targets[mode].clients
            run_env = {**targets[mode].env, "API_BENCH_BODY": bodies[endpoint].decode()}
            tree = trees[suffix]
            command = [str(VENV_BIN / "hitstream"), "api", "--port", str(port)]
            if tree is not None:  # `python -m` from inside the tree: its packages come first
                command = ["env", "-C", str(tree), sys.executable, "-m", "hitstream", "api", "--port", str(port)]
            url = f"http://127.0.0.1:{port}{path}"
            connections = args.batch_connections if endpoint == "batch" else args.connections
            return measure_api(command, url, run_env, args.seconds, connections, clients[0], clients)

        for mode in modes:  # untimed: each Redis faults in its memory before the rounds
            measure(mode, "", "single")
        runs: dict[tuple[str, str], list[Result]] = {
            (endpoint, f"{mode}{suffix}"): [] for endpoint in ENDPOINTS for mode, suffix in variants
        }
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
            for endpoint in ENDPOINTS:
                for mode, suffix in order:
                    runs[endpoint, f"{mode}{suffix}"].append(measure(mode, suffix, endpoint))

    print(
        f"durability modes, {args.rounds} rounds of {args.seconds} s, wrk -c{args.connections} "
        f"(batch: -c{args.batch_connections}), order rotated per round"
        + (f"; {BASELINE_SUFFIX.strip()}: {args.baseline_tree}" if args.baseline_tree else "")
    )
    print_runs({f"{endpoint} {variant}": results for (endpoint, variant), results in runs.items()}, _items)
    print_mode_medians(runs)


def _items(run_name: str) -> int:
    return ENDPOINTS[run_name.split()[0]][1]


def print_mode_medians(runs: dict[tuple[str, str], list[Result]]) -> None:
    """Each variant's medians, and its ratio to this tree's relaxed mode in the same round."""
    print(
        f"{'medians':<24}{'req/s':>9}{'items/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}{'CPU us/req':>11}"
        f"{'Redis us/req':>13}{'req/call':>9}  x relaxed, same round (per round; median); p99 - relaxed's"
    )
    for (endpoint, variant), results in runs.items():
        items = ENDPOINTS[endpoint][1]
        relaxed = runs[endpoint, str(Durability.RELAXED)]

        def median(field: str, of: list[Result] = results) -> float:
            return statistics.median(getattr(result, field) for result in of)

        ratios = [
            ours.accepted_per_second / theirs.accepted_per_second for ours, theirs in zip(results, relaxed, strict=True)
        ]
        p99_extra = [ours.p99_ms - theirs.p99_ms for ours, theirs in zip(results, relaxed, strict=True)]
        verdict = ""
        if variant == Durability.FSYNC:
            met = (
                statistics.median(ratios) >= FSYNC_TARGET_RATIO and statistics.median(p99_extra) <= FSYNC_TARGET_P99_MS
            )
            target = f"target >= {FSYNC_TARGET_RATIO}x, p99 +{FSYNC_TARGET_P99_MS:.0f} ms"
            verdict = f" ({target}: {'met' if met else 'NOT met'})"
        print(
            f"{endpoint + ' ' + variant:<24}{median('requests_per_second'):>9.0f}"
            f"{median('accepted_per_second') * items:>9.0f}{median('p50_ms'):>8.2f}{median('p99_ms'):>8.2f}"
            f"{sum(result.non_2xx for result in results):>8}{median('cpu_us_per_request'):>11.1f}"
            f"{median('redis_cpu_us_per_request'):>13.1f}{median('requests_per_call'):>9.1f}  "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            + f"; {statistics.median(ratios):.2f}x; p99 {statistics.median(p99_extra):+.2f} ms{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="no-op/ingest pairs, or rounds of every mode")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, help="wrk's connections for the batch endpoint")
    parser.add_argument(
        "--baseline-tree", type=Path, help="another hitstream checkout whose ingest API is measured in every round too"
    )
    parser.add_argument(
        "--modes",
        help="durability modes to compare instead of the no-op comparison, e.g. relaxed,fsync,replicated "
        "(relaxed among them: the ratios are to it)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    if args.batch_connections is None:
        args.batch_connections = args.connections
    modes: list[Durability] = []
    if args.modes:
        try:
            modes = [Durability(name.strip()) for name in args.modes.split(",")]
        except ValueError:
            parser.error(f"--modes: each must be one of {', '.join(Durability)}")
        if Durability.RELAXED not in modes:
            parser.error("--modes must include relaxed: the ratios are to it")

    with tempfile.TemporaryDirectory(prefix="api-bench-") as data_dir:
        if modes:
            compare_modes(args, modes, Path(data_dir))
        else:
            compare_to_noop(args, Path(data_dir))


if __name__ == "__main__":
    main()
