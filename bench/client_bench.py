"""The Python client's cost to the application and its throughput, beside the replay tool's.

    .venv/bin/python -m bench.client_bench [--calls 200000] [--pageviews 50000] [--rounds 3]

1. Added latency per ``send_pageview`` call, in the application's thread, while the client's
   sender posts to a live API in the background (so its thread competes for the GIL as in
   production). Same-run baseline: appending the same arguments to a list, the least any
   in-memory hand-off costs. Rounds alternate A and B; each call is timed on its own
   (perf_counter_ns, whose own ~50 ns are included in both).
2. Throughput to the batch endpoint: ``--pageviews`` pageviews given to a ``Client`` as fast
   as the application can, until ``flush`` returns (all answered), against ``hitstream replay
   --endpoint batch`` (500-item batches, 32 requests in flight) of the same records, and the
   replay's default (single endpoint, 32 in flight), in alternating rounds. A replay's time
   includes its process start (~1 s here): use enough pageviews to make that small.

Everything runs through one ``hitstream up`` (its own Redis, the embedded store, API and one
worker draining as it goes) with the rate limit out of the way; the client posts with a
live token, the replay with a bulk one (each lane its own cap). On a loaded machine only the
same-run ratios mean something.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.replay_bench import create_token, replay, start_up, write_pageviews
from hitstream.client import Client, Options

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000

    return {"mean": statistics.fmean(ordered) / 1000, "p50": at(0.5), "p99": at(0.99), "p99.9": at(0.999)}


def call_latency(client: Client, calls: int) -> list[int]:
    """ns per send_pageview call, one sample per call."""
    samples = []
    clock = time.perf_counter_ns
    for n in range(calls):
        started = clock()
        client.send_pageview(f"https://demo.localhost/blog/post-{n % 5000}", "198.51.100.7", UA, referrer="https://x/")
        samples.append(clock() - started)
    return samples


def baseline_latency(calls: int) -> list[int]:
    """ns per append of the same arguments to a list (the floor of any in-memory hand-off)."""
    samples = []
    queue: list[tuple[Any, ...]] = []
    clock = time.perf_counter_ns
    for n in range(calls):
        started = clock()
        queue.append((f"https://demo.localhost/blog/post-{n % 5000}", "198.51.100.7", UA, "https://x/"))
        samples.append(clock() - started)
    return samples


def client_throughput(base_url: str, secret: str, records: list[dict[str, Any]]) -> float:
    """pageviews/s from the first send_pageview to flush's return (every batch answered)."""
    client = Client(base_url, secret, Options(max_queue=len(records)))
    started = time.perf_counter()
    for record in records:
        client.send_pageview(**record)
    assert client.flush(timeout=600), client.stats
    seconds = time.perf_counter() - started
    client.close()
    assert client.stats.delivered == len(records), client.stats
    return len(records) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="send_pageview calls per latency round")
    parser.add_argument("--pageviews", type=int, default=50_000, help="pageviews per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="client-bench-") as folder:
        work = Path(folder)
        views = work / "views.ndjson"
        write_pageviews(views, args.pageviews)
        records = [orjson.loads(line) for line in views.read_bytes().splitlines()]
        up, base_url, env = start_up(work)
        latency: dict[str, list[int]] = {"send_pageview": [], "list.append": []}
        rates: dict[str, list[float]] = {"client": [], "replay --endpoint batch": [], "replay (single)": []}
        try:
            live_secret = create_token(env)
            env["HITSTREAM_TOKEN"] = create_token(env, "--bulk")
            sending = Client(base_url, live_secret, Options(max_queue=args.calls))
            for _ in range(args.rounds):
                latency["send_pageview"] += call_latency(sending, args.calls)
                latency["list.append"] += baseline_latency(args.calls)
            sending.flush(timeout=600)
            sending.close()
            for _ in range(args.rounds):
                rates["client"].append(client_throughput(base_url, live_secret, records))
                # --restart: the replay's journal would skip every line of an earlier round.
                seconds, _ = replay(views, base_url, env, "--restart", "--endpoint", "batch")
                rates["replay --endpoint batch"].append(args.pageviews / seconds)
                seconds, _ = replay(views, base_url, env, "--restart")
                rates["replay (single)"].append(args.pageviews / seconds)
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)

    print(
        f"conditions: {os.cpu_count()} cores, hitstream up (API + 1 worker + Redis) on this machine, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"1. per call, {args.rounds} alternating rounds of {args.calls} calls, the sender posting meanwhile (µs):")
    for name, samples in latency.items():
        figures = percentiles(samples)
        print(f"   {name:14} " + "  ".join(f"{key} {value:7.2f}" for key, value in figures.items()))
    added = percentiles(latency["send_pageview"])["mean"] - percentiles(latency["list.append"])["mean"]
    print(f"   added by the client over the baseline: {added:.2f} µs per call (mean; target < 20 µs)")
    print(f"2. throughput, {args.pageviews} pageviews per round, {args.rounds} alternating rounds (pageviews/s):")
    for name, values in rates.items():
        print(f"   {name:24} median {statistics.median(values):8.0f}  rounds " + ", ".join(f"{v:.0f}" for v in values))
    client_rate = statistics.median(rates["client"])
    for name in ("replay --endpoint batch", "replay (single)"):
        print(f"   client / {name}: {client_rate / statistics.median(rates[name]):.2f}x")


if __name__ == "__main__":
    main()
