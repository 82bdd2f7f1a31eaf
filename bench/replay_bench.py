"""Wall time and rate of ``hitstream replay`` through a whole ``hitstream up`` on this machine.

    .venv/bin/python bench/replay_bench.py [--lines 1000000] [--baseline-lines 20000]

Generates NDJSON pageviews for the demo site, starts ``hitstream up`` (its own Redis on a free
port, the embedded store in a temporary folder, API and one worker), creates a bulk token for
the demo site (a replay asks for the bulk lane), and replays the file with
the default options (single endpoint, 32 requests in flight; ``--endpoint batch`` for
500-item batches). The same-run baseline is a naive
client: the same replay with one request in flight (``--concurrency 1``) over the first
``--baseline-lines`` lines, so the ratio shows what concurrency buys on this machine. The
rate limit is raised out of the way (this measures throughput, not the 429 path).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import redis

from shared import keys
from tests.ports import free_port

HITSTREAM = [sys.executable, "-m", "hitstream"]
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def write_pageviews(path: Path, lines: int) -> None:
    with path.open("wb") as file:
        for n in range(lines):
            file.write(
                orjson.dumps(
                    {
                        "url": f"https://demo.localhost/blog/post-{n % 5000}?utm_source=replay",
                        "timestamp": f"2025-10-{n % 28 + 1:02d}T{n % 24:02d}:{n % 60:02d}:00Z",
                        "visitor_ip": f"198.51.{n % 250}.{n % 200 + 1}",
                        "user_agent": USER_AGENT,
                        "referrer": "https://news.example.org/",
                    }
                )
                + b"\n"
            )


def wait_ready(base_url: str, up: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise SystemExit(f"hitstream up exited with {up.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("hitstream up was not ready in time")


def start_up(work: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """``hitstream up`` with its data in ``work``, its own Redis on a free port and the rate
    limit out of the way, once ready: the process, its base URL, and the environment for
    further ``hitstream`` commands on it."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HITSTREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "HITSTREAM_RATE_LIMIT": "1000000",
        "HITSTREAM_RATE_BURST": "1000000",
        "HITSTREAM_QUEUE_MAX_DEPTH": "2000000",
    }
    env.pop("HITSTREAM_CLICKHOUSE_URL", None)
    up = subprocess.Popen(
        [*HITSTREAM, "up", "--port", str(port), "--data-dir", str(work / "var")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(base_url, up)
    except BaseException:
        up.kill()
        up.wait()
        raise
    return up, base_url, env


def create_token(env: dict[str, str], *extra: str) -> str:
    """A new token's secret for the demo site (``--bulk`` for the bulk lane)."""
    created = subprocess.run(
        [*HITSTREAM, "tokens", "create", "--site", "demo.localhost", "--role", "owner", *extra],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def replay(path: Path, base_url: str, env: dict[str, str], *extra: str) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(
        [*HITSTREAM, "replay", str(path), "--url", base_url, "--quiet", *extra],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.monotonic() - started, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--baseline-lines", type=int, default=20_000)
    parser.add_argument(
        "--endpoint",
        choices=["single", "batch"],
        default="single",
        help="replay's --endpoint for the measured run (the baseline is always single)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="replay-bench-") as folder:
        work = Path(folder)
        views, baseline_views = work / "views.ndjson", work / "baseline.ndjson"
        write_pageviews(views, args.lines)
        write_pageviews(baseline_views, args.baseline_lines)
        up, base_url, env = start_up(work)
        redis_url = env["HITSTREAM_REDIS_URL"]
        try:
            # A replay uses the bulk lane, which needs a bulk token (the demo token is a live one).
            env["HITSTREAM_TOKEN"] = create_token(env, "--bulk")
            baseline_seconds, _ = replay(baseline_views, base_url, env, "--concurrency", "1")
            seconds, summary = replay(views, base_url, env, "--endpoint", args.endpoint)
            queued = redis.Redis.from_url(redis_url).xlen(keys.BULK_STREAM)
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)

    rate = args.lines / seconds
    baseline_rate = args.baseline_lines / baseline_seconds
    print(summary.strip())
    print(
        f"replay: {args.lines} lines in {seconds:.1f} s = {rate:.0f} lines/s "
        f"({args.endpoint} endpoint, concurrency 32, through hitstream up on {os.cpu_count()} cores)"
    )
    print(
        f"baseline (one request in flight): {args.baseline_lines} lines in "
        f"{baseline_seconds:.1f} s = {baseline_rate:.0f} lines/s"
    )
    print(f"ratio: {rate / baseline_rate:.2f}x; still queued for the worker at the end: {queued}")


if __name__ == "__main__":
    main()
