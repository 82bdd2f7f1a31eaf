"""Live ingest-to-store latency with and without a full-speed replay in the bulk lane, and the
replay's own throughput beside the single-lane code's, in one run on this machine.

    .venv/bin/python -m bench.lanes_bench [--lines 1000000] [--live-rate 20] [--quiet-seconds 20]
                                          [--baseline-tree PATH]

Starts ``hitstream up`` (its own Redis on a free port, the embedded store in a temporary
folder, API and one worker, as bench/replay_bench.py does) and, with a live client posting
single pageviews at a steady ``--live-rate`` with the demo (live) token:

1. for ``--quiet-seconds`` with nothing else running: live latency without a flood;
2. while ``hitstream replay --endpoint batch`` sends ``--lines`` NDJSON lines with a bulk
   token: live latency during the flood, and the replay's wall time.

Live ingest-to-store latency is measured without reading the store: entries are deleted from
the live stream only after their insert, so a pageview whose 202 arrived at t is stored by
the first moment the live stream holds no entry added at or before t (its first entry is
sampled every 20 ms). With ``--baseline-tree`` (a checkout of the single-lane code, e.g.
``git archive main | tar -x -C PATH``) the same replay runs first through that code's
``hitstream up`` for the same-run single-lane throughput; without it the README's figure is
printed as the reference. The load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from bench.replay_bench import HITSTREAM, USER_AGENT, free_port, replay, wait_ready, write_pageviews
from shared import keys

README_SINGLE_LANE = (47.3, 21_156)  # seconds and lines/s of 1M lines, --endpoint batch (README)
SAMPLE_SECONDS = 0.02
SETTLE_SECONDS = 15.0  # how long the last live pageviews may take to be seen stored
ENV = {"HITSTREAM_RATE_LIMIT": "1000000", "HITSTREAM_RATE_BURST": "1000000", "HITSTREAM_QUEUE_MAX_DEPTH": "2000000"}


@dataclass
class LiveClient:
    """One keep-alive connection posting a pageview every 1/rate seconds (on a schedule, so a
    slow answer does not lower the rate afterwards); notes when each 202 arrived (ms)."""

    port: int
    secret: str
    rate: float
    accepted_ms: list[int] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)  # status -> answers that were not 202
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        next_at = time.monotonic()
        while not self.stop.is_set():
            body = orjson.dumps(
                {
                    "url": "https://demo.localhost/live",
                    "timestamp": "2026-11-27T12:00:00Z",
                    "visitor_ip": "81.2.69.160",
                    "user_agent": USER_AGENT,
                    "page_id": str(uuid.uuid4()),
                }
            )
            connection.request("POST", "/api/ingest/server/pageview", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == 202:
                self.accepted_ms.append(time.time_ns() // 1_000_000)
            else:
                self.refused[response.status] += 1
            next_at += 1 / self.rate
            self.stop.wait(max(next_at - time.monotonic(), 0))
        connection.close()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(60)


@dataclass
class Sampler:
    """(wall ms, ms of the live stream's first entry or None) every SAMPLE_SECONDS."""

    client: redis.Redis
    samples: list[tuple[int, int | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            first = self.client.xrange(keys.STREAM, count=1)
            self.samples.append((time.time_ns() // 1_000_000, int(first[0][0].split(b"-")[0]) if first else None))

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(10)

    def latencies(self, accepted_ms: list[int]) -> list[float]:
        """Seconds from each 202 until the pageview was seen stored (unseen ones are left out
        and counted by the caller)."""
        found = []
        for accepted in accepted_ms:
            for sampled, first in self.samples:
                if sampled >= accepted and (first is None or first > accepted):
                    found.append((sampled - accepted) / 1000)
                    break
        return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def describe(name: str, accepted: list[int], latencies: list[float], refused: Counter[int]) -> str:
    if not latencies:
        refusals = dict(refused) or "none"
        return f"{name}: no live pageview was seen stored ({len(accepted)} accepted; refused by status: {refusals})"
    return (
        f"{name}: p50 {percentile(latencies, 0.5):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
        f"max {max(latencies):.2f} s over {len(latencies)} pageviews "
        f"({len(accepted) - len(latencies)} not seen stored; refused by status: {dict(refused) or 'none'})"
    )


class Up:
    """``hitstream up`` of the code in ``tree`` (None: this checkout) on free ports."""

    def __init__(self, work: Path, tree: Path | None) -> None:
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **ENV, "HITSTREAM_REDIS_URL": self.redis_url}
        self.env.pop("HITSTREAM_CLICKHOUSE_URL", None)
        self.cwd = tree
        if tree is not None:  # `python -c` imports from the working folder first
            self.env["PYTHONPATH"] = str(tree)
        self.data_dir = work / "var"
        self.process = subprocess.Popen(
            [*HITSTREAM, "up", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.base_url, self.process)
        self.demo_token = (self.data_dir / "demo-token").read_text().strip()

    def command(self, *arguments: str) -> str:
        return subprocess.run(
            [*HITSTREAM, *arguments], env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True
        ).stdout

    def replay(self, path: Path, token: str) -> tuple[float, str]:
        return replay(path, self.base_url, {**self.env, "HITSTREAM_TOKEN": token}, "--endpoint", "batch")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(180)


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--live-rate", type=float, default=20.0, help="live pageviews per second")
    parser.add_argument("--quiet-seconds", type=float, default=20.0)
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="a checkout of the single-lane code, replayed first for the same-run figure",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lanes-bench-") as folder:
        work = Path(folder)
        views = work / "views.ndjson"
        write_pageviews(views, args.lines)
        print(f"start: {load()}")

        single_lane = README_SINGLE_LANE
        if args.baseline_tree is not None:
            (work / "baseline").mkdir()
            up = Up(work / "baseline", args.baseline_tree.resolve())
            try:
                seconds, _ = up.replay(views, up.demo_token)
            finally:
                up.stop()
            single_lane = (seconds, args.lines / seconds)
            (work / "views.ndjson.state.json").unlink(missing_ok=True)
            print(f"single lane done: {load()}")

        (work / "lanes").mkdir()
        up = Up(work / "lanes", None)
        try:
            bulk_token = (
                up.command(
                    "tokens",
                    "create",
                    "--site",
                    "demo.localhost",
                    "--role",
                    "owner",
                    "--name",
                    "lanes bench replay",
                    "--bulk",
                )
                .strip()
                .splitlines()[-1]
            )
            sampler = Sampler(redis.Redis.from_url(up.redis_url))
            sampler.start()

            quiet = LiveClient(up.port, up.demo_token, args.live_rate)
            quiet.start()
            time.sleep(args.quiet_seconds)
            quiet.finish()

            flooded = LiveClient(up.port, up.demo_token, args.live_rate)
            flooded.start()
            seconds, summary = up.replay(views, bulk_token)
            flooded.finish()
            print(f"replay done: {load()}")
            bulk_left = redis.Redis.from_url(up.redis_url).xlen(keys.BULK_STREAM)
            time.sleep(SETTLE_SECONDS)
            sampler.finish()
        finally:
            up.stop()

    print(summary.strip())
    print(
        describe(
            "live ingest-to-store latency without a flood",
            quiet.accepted_ms,
            sampler.latencies(quiet.accepted_ms),
            quiet.refused,
        )
    )
    print(
        describe(
            "live ingest-to-store latency during the replay",
            flooded.accepted_ms,
            sampler.latencies(flooded.accepted_ms),
            flooded.refused,
        )
    )
    rate = args.lines / seconds
    source = "measured in this run" if args.baseline_tree is not None else "from the README"
    print(
        f"replay with lanes: {args.lines} lines in {seconds:.1f} s = {rate:.0f} lines/s "
        f"(batch endpoint, bulk lane; {bulk_left} still queued in the bulk lane at its end)"
    )
    print(
        f"single lane ({source}): {single_lane[0]:.1f} s = {single_lane[1]:.0f} lines/s; "
        f"lanes / single lane: {rate / single_lane[1]:.2f}x"
    )
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
