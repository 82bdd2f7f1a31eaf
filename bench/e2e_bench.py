"""CPU per stored pageview, end to end: from the HTTP request to the stored row, per process.

    .venv/bin/python -m bench.e2e_bench [--pageviews 30000] [--rounds 3] [--endpoint single,batch]
                                        [--connections 64] [--batch-connections 16]
                                        [--worker-processes 1] [--baseline-tree DIR [--together]]
                                        [--py-spy DIR]

Runs the pipeline as a user runs it: a Redis started the project's own way
(hitstream.redis_server.RedisServer, ``appendonly yes``, ``appendfsync always``: the default
``fsync`` durability mode; bench/bench_redis.py keeps its AOF rewrites out of the timed runs),
``hitstream migrate``, ``hitstream api`` (one process) and ``hitstream worker`` (one process by
default; ``--worker-processes N`` > 1 runs N enrichers + one writer) on a fresh embedded chdb
store, GeoIP City and ASN databases (tests/geoip_fixtures.py) configured. Then ``wrk``, the load
generator (not counted), posts ``--pageviews`` pageviews (bench/api_bench.py's realistic body) to
the single endpoint with ``--connections`` connections, or in 100-item batches to the batch
endpoint with ``--batch-connections``; the run ends once every accepted pageview is stored
(the live stream is empty: entries are deleted after their insert), and the stored row count
is checked against the entries the API added to the stream (one per accepted pageview; wrk
does not count the answers that arrive after it stopped).

For each run it prints, per stored pageview, the CPU time (user + system, /proc) that each
process used from the first request until the last pageview was stored: the API process, the
worker process(es), Redis (INFO cpu); requests/s (wrk's) and pageviews accepted per second
while wrk posted ("pv/s"); the request latency
p50/p99 (wrk); and the ingest-to-store latency p50/p99: from the hand-off to Redis (the
stream entry's id is Redis's clock at XADD, right before the 202) until the entry was deleted
after its insert, sampled every 10 ms with XINFO STREAM (its first entry, last id and entries
added; resolution: the sampling interval). With ``--worker-processes`` > 1 an enricher
acknowledges a lane entry once it has handed the batch to the writer, so the latency ends
there; the CPU window still ends once the writer has stored everything.

Before each timed run the processes drain ``--warm-up`` pageviews untimed. With
``--baseline-tree DIR`` (another checkout, e.g. ``git archive <commit> | tar -x -C DIR``; its
API and worker run as ``python -m hitstream`` from inside DIR, so its packages come first) both
trees run in every round, alternating which goes first, each on its own fresh Redis and store;
the bench prints each tree's medians and this tree's figures over the baseline's per round.
On a machine shared with other work the CPU per pageview of one tree swings by ±20% between
runs a minute apart (the load changes under it); ``--together`` runs both trees' pipelines at
the same time in each round instead, each with its own wrk, so both see the same load (and
each other's): their per-round ratios are what an A/B of a small cut needs, while the absolute
figures are those of a machine running two pipelines.
``--py-spy DIR`` records each timed run's API and worker with py-spy (collapsed stacks, the
processes not paused; it costs them some CPU, so take CPU figures from runs without it).
Needs ``wrk`` (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from bench.api_bench import BATCH_ITEMS, BENCH_DIR, api_env, cpu_seconds, provision, realistic_body, serve
from bench.bench_redis import rewrite_aof, start_redis
from bench.worker_bench import _registered, stored_rows
from shared import keys
from tests import geoip_fixtures
from tests.ports import free_port

THIS_TREE = "this tree"
BASELINE = "baseline"
SAMPLE_SECONDS = 0.01
STORE_TIMEOUT_SECONDS = 300.0
ENDPOINTS = {"single": ("/api/ingest/server/pageview", 1), "batch": ("/api/ingest/server/pageviews", BATCH_ITEMS)}
PROCESSES = ("API", "worker", "Redis")


@dataclass(frozen=True)
class Run:
    stored: int  # pageviews stored in the timed part
    cpu_us: dict[str, float]  # process -> CPU µs per stored pageview
    requests_per_second: float  # wrk's
    accepted_per_second: float  # pageviews accepted (stream entries added) per second of posting
    request_p50_ms: float
    request_p99_ms: float
    store_p50_ms: float
    store_p99_ms: float

    @property
    def total_cpu_us(self) -> float:
        return sum(self.cpu_us.values())


@dataclass
class StreamSampler:
    """Every SAMPLE_SECONDS: (wall ms, first entry's ms or None, last id's ms, entries added)."""

    client: redis.Redis
    samples: list[tuple[int, int | None, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            info = self.client.xinfo_stream(keys.STREAM)
            first = info["first-entry"]
            self.samples.append(
                (
                    time.time_ns() // 1_000_000,
                    _id_ms(first[0]) if first else None,
                    _id_ms(info["last-generated-id"]),
                    int(info["entries-added"]),
                )
            )

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(10)

    def latencies_ms(self) -> list[float]:
        """One figure per pageview added while sampling: from its XADD (the newest id of the
        pageviews added between two samples) to the first sample whose stream no longer holds it."""
        found: list[float] = []
        for index in range(1, len(self.samples)):
            _, _, last_ms, added = self.samples[index]
            count = added - self.samples[index - 1][3]
            if count <= 0:
                continue
            for sampled_ms, first_ms, _, _ in self.samples[index:]:
                if first_ms is None or first_ms > last_ms:
                    found.extend([float(sampled_ms - last_ms)] * count)
                    break
        return found


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def _process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (a worker with -n > 1 forks enrichers and a writer)."""
    process = psutil.Process(pid)
    return cpu_seconds(pid) + sum(cpu_seconds(child.pid) for child in process.children(recursive=True))


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Pipeline:
    """Redis, the store, ``hitstream api`` and ``hitstream worker`` of one tree, as a user runs them."""

    def __init__(
        self, stack: ExitStack, scratch: Path, tree: Path | None, worker_processes: int, profile_to: Path | None
    ) -> None:
        self.scratch = scratch
        self.profile_to = profile_to
        self.stack = stack
        server = start_redis(stack, scratch / "redis", "always")
        self.client = redis.Redis.from_url(server.url)
        self.store = scratch / "chdb"
        self.port = free_port()
        geoip = scratch / "geoip"
        geoip.mkdir()
        self.env = {
            **api_env(server.url, provision(self.client)),
            "HITSTREAM_CLICKHOUSE_URL": f"chdb://{self.store}",
            "HITSTREAM_GEOIP_CITY_DB": str(geoip_fixtures.build_city_db(geoip / "city.mmdb")),
            "HITSTREAM_GEOIP_ASN_DB": str(geoip_fixtures.build_asn_db(geoip / "asn.mmdb")),
            "HITSTREAM_LOG_LEVEL": "WARNING",
        }
        # `python -m hitstream` from inside the tree: its packages come before any other's.
        self.hitstream = ["env", "-C", str((tree or Path.cwd()).resolve()), sys.executable, "-m", "hitstream"]
        subprocess.run([*self.hitstream, "migrate"], env=self.env, check=True, capture_output=True)
        self.api = serve([*self.hitstream, "api", "--port", str(self.port)], self.port, self.env)
        stack.callback(_stop, self.api)
        log = (scratch / "worker.log").open("wb")
        stack.callback(log.close)
        self.worker = subprocess.Popen(
            [*self.hitstream, "worker", "--processes", str(worker_processes)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        stack.callback(_stop, self.worker)
        self.worker_pid = self.worker.pid  # `env -C` execs the interpreter: the same pid
        queue = keys.STORE_QUEUE if worker_processes > 1 else keys.BATCH_QUEUE
        deadline = time.monotonic() + 60
        while not _registered(self.client, queue, {self.worker_pid, *self._children(self.worker_pid)}):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start: {(scratch / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.05)
        self.api_pid = self.api.pid

    @staticmethod
    def _children(pid: int) -> set[int]:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}

    def post(self, endpoint: str, pageviews: int, connections: int) -> tuple[str, int, float]:
        """wrk posts ``pageviews`` pageviews; its output, the pageviews accepted (each a stream
        entry: wrk does not count the answers that arrive after it stopped) and the seconds
        until it stopped."""
        path, items = ENDPOINTS[endpoint]
        body = realistic_body()
        if items > 1:
            body = b"[" + b",".join([body] * items) + b"]"
        requests = max(pageviews // items, 1)
        done = self.scratch / "wrk-done"
        done.unlink(missing_ok=True)
        env = {
            **self.env,
            "API_BENCH_BODY": body.decode(),
            "API_BENCH_REQUESTS": str(requests),
            "API_BENCH_DONE": str(done),
        }
        added = self._entries_added()
        started = time.perf_counter()
        wrk = subprocess.Popen(
            ["wrk", "-t1", f"-c{min(connections, requests)}", "-d600s", "--latency", "-s"]
            + [str(BENCH_DIR / "api_post.lua"), f"http://127.0.0.1:{self.port}{path}"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        seconds = 0.0
        while wrk.poll() is None:  # wrk sleeps out -d unless interrupted (bench/api_post.lua)
            if done.exists():
                seconds = seconds or time.perf_counter() - started
                wrk.send_signal(signal.SIGINT)
            time.sleep(0.005)
        output = wrk.stdout.read() if wrk.stdout else ""
        if wrk.returncode != 0:
            raise SystemExit(f"wrk exited with code {wrk.returncode}: {output}")
        return output, self._entries_added() - added, seconds or time.perf_counter() - started

    def _waiting(self) -> int:
        """Entries not stored yet: in the live lane, or handed to the writer (enrichers + writer)."""
        return int(self.client.xlen(keys.STREAM)) + int(self.client.xlen(keys.ENRICHED_STREAM))

    def _entries_added(self) -> int:
        if not self.client.exists(keys.STREAM):
            return 0
        return int(self.client.xinfo_stream(keys.STREAM)["entries-added"])

    def _profile(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        """With ``--py-spy DIR``: py-spy records ``pid`` (collapsed stacks, not pausing it) into
        DIR/<run>-<name>.txt until the timed run ends."""
        if self.profile_to is None:
            return None
        return subprocess.Popen(
            ["py-spy", "record", "--nonblocking", "--rate", "250", "--format", "raw", "-p", str(pid)]
            + ["-o", str(self.profile_to / f"{self.scratch.name}-{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_stored(self) -> None:
        """Until every accepted pageview is stored: the stream is empty, and stays so while the
        requests wrk left in flight when it stopped are answered."""
        deadline = time.monotonic() + STORE_TIMEOUT_SECONDS
        while True:
            added = self._entries_added()
            while self._waiting() > 0:
                if self.worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the queue did not drain: {(self.scratch / 'worker.log').read_text()[-2000:]}")
                time.sleep(0.002)
            time.sleep(0.2)
            if self._entries_added() == added and self._waiting() == 0:  # nothing came late
                return

    def run(self, endpoint: str, pageviews: int, connections: int, warm_up: int) -> Run:
        self.post(endpoint, warm_up, connections)
        self.wait_stored()
        rewrite_aof(self.client)
        warm = self._entries_added()
        before = {
            "API": cpu_seconds(self.api_pid),
            "worker": _process_cpu(self.worker_pid),
            "Redis": _redis_cpu(self.client),
        }
        sampler = StreamSampler(redis.Redis.from_url(self.env["HITSTREAM_REDIS_URL"]))
        sampler.start()
        profilers = [self._profile(pid, name) for name, pid in (("api", self.api_pid), ("worker", self.worker_pid))]
        try:
            output, _, seconds = self.post(endpoint, pageviews, connections)
            self.wait_stored()
            accepted = self._entries_added() - warm
        finally:
            sampler.finish()
            for profiler in profilers:
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(60)
        after = {
            "API": cpu_seconds(self.api_pid),
            "worker": _process_cpu(self.worker_pid),
            "Redis": _redis_cpu(self.client),
        }
        _stop(self.api)
        _stop(self.worker)
        stored = stored_rows(self.store) - warm
        if stored != accepted:
            raise SystemExit(f"stored {stored} pageviews for {accepted} accepted")
        latencies = sampler.latencies_ms()
        return Run(
            stored=stored,
            cpu_us={name: (after[name] - before[name]) / stored * 1e6 for name in PROCESSES},
            requests_per_second=float(_found(r"Requests/sec:\s+([\d.]+)", output)),
            accepted_per_second=accepted / seconds,
            request_p50_ms=_latency_ms(output, "50%"),
            request_p99_ms=_latency_ms(output, "99%"),
            store_p50_ms=percentile(latencies, 0.50),
            store_p99_ms=percentile(latencies, 0.99),
        )


def _found(pattern: str, output: str) -> str:
    found = re.search(pattern, output)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in wrk's output:\n{output}")
    return found.group(1)


def _latency_ms(output: str, percentile_name: str) -> float:
    value, unit = re.search(rf"^\s+{percentile_name}\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def one_run(args: argparse.Namespace, tree: Path | None, endpoint: str, scratch: Path) -> Run:
    connections = args.batch_connections if endpoint == "batch" else args.connections
    with ExitStack() as stack:
        pipeline = Pipeline(stack, scratch, tree, args.worker_processes, args.py_spy)
        return pipeline.run(endpoint, args.pageviews, connections, args.warm_up)


def print_runs(endpoint: str, runs: dict[str, list[Run]]) -> None:
    header = (
        f"{'run':<16}{'stored':>8}"
        + "".join(f"{name + ' us':>11}" for name in PROCESSES)
        + f"{'total us':>10}{'req/s':>9}{'pv/s':>8}{'req p50':>9}{'req p99':>9}{'store p50':>10}{'store p99':>10}"
    )
    print(f"\n{endpoint} endpoint: CPU us per stored pageview; latencies in ms")
    print(header)
    for name, results in runs.items():
        for number, run in enumerate(results, 1):
            print(_row(f"{name} {number}", run))
    for name, results in runs.items():
        print(_row(f"{name} median", _median(results)))
    if BASELINE in runs:
        pairs = list(zip(runs[THIS_TREE], runs[BASELINE], strict=True))
        for label, ratio in (
            ("total CPU", [ours.total_cpu_us / theirs.total_cpu_us for ours, theirs in pairs]),
            *(
                (f"{name} CPU", [ours.cpu_us[name] / theirs.cpu_us[name] for ours, theirs in pairs])
                for name in PROCESSES
            ),
            ("pageviews/s", [ours.accepted_per_second / theirs.accepted_per_second for ours, theirs in pairs]),
        ):
            print(
                f"this tree / baseline, {label}: "
                + ", ".join(f"{value:.2f}" for value in ratio)
                + f"; median {statistics.median(ratio):.2f}x (range {min(ratio):.2f}-{max(ratio):.2f})"
            )
        extra = [ours.store_p99_ms - theirs.store_p99_ms for ours, theirs in pairs]
        print(
            "this tree - baseline, ingest-to-store p99: "
            + ", ".join(f"{value:+.0f}" for value in extra)
            + f" ms; median {statistics.median(extra):+.0f} ms"
        )


def _median(runs: list[Run]) -> Run:
    def median(get: object) -> float:
        return statistics.median(get(run) for run in runs)  # type: ignore[operator]

    return Run(
        stored=int(median(lambda run: run.stored)),
        cpu_us={name: median(lambda run, name=name: run.cpu_us[name]) for name in PROCESSES},
        requests_per_second=median(lambda run: run.requests_per_second),
        accepted_per_second=median(lambda run: run.accepted_per_second),
        request_p50_ms=median(lambda run: run.request_p50_ms),
        request_p99_ms=median(lambda run: run.request_p99_ms),
        store_p50_ms=median(lambda run: run.store_p50_ms),
        store_p99_ms=median(lambda run: run.store_p99_ms),
    )


def _row(label: str, run: Run) -> str:
    return (
        f"{label:<16}{run.stored:>8}"
        + "".join(f"{run.cpu_us[name]:>11.1f}" for name in PROCESSES)
        + f"{run.total_cpu_us:>10.1f}{run.requests_per_second:>9.0f}{run.accepted_per_second:>8.0f}"
        f"{run.request_p50_ms:>9.1f}{run.request_p99_ms:>9.1f}{run.store_p50_ms:>10.0f}{run.store_p99_ms:>10.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pageviews", type=int, default=30_000, help="pageviews posted in each timed run")
    parser.add_argument("--warm-up", type=int, default=3_000, help="pageviews posted untimed before each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint", default="single,batch", help="single, batch or both (comma-separated)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, single endpoint")
    parser.add_argument("--batch-connections", type=int, default=16, help="wrk connections, batch endpoint")
    parser.add_argument("--worker-processes", type=int, default=1, help="hitstream worker --processes")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout run in every round too")
    parser.add_argument(
        "--together",
        action="store_true",
        help="run both trees at the same time in each round (the same load on both: tighter CPU ratios)",
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="profile the API and worker of each timed run with py-spy into DIR"
    )
    args = parser.parse_args()
    if args.py_spy is not None:
        if shutil.which("py-spy") is None:
            sys.exit("py-spy is not on PATH: pip install py-spy")
        args.py_spy.mkdir(parents=True, exist_ok=True)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    endpoints = [name.strip() for name in args.endpoint.split(",")]
    if not set(endpoints) <= set(ENDPOINTS):
        parser.error(f"--endpoint: each must be one of {', '.join(ENDPOINTS)}")
    trees: dict[str, Path | None] = {THIS_TREE: None}
    if args.baseline_tree:
        trees[BASELINE] = args.baseline_tree.resolve()
    print(
        f"e2e_bench: {args.pageviews} pageviews per run after {args.warm_up} untimed, {args.rounds} rounds, "
        f"worker processes {args.worker_processes}, load average {os.getloadavg()[0]:.1f}"
        + (f", baseline {args.baseline_tree}" if args.baseline_tree else "")
    )
    with tempfile.TemporaryDirectory(prefix="hitstream-e2e-bench-") as scratch_dir:
        for endpoint in endpoints:
            runs: dict[str, list[Run]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
                scratches = {
                    name: Path(scratch_dir) / f"{endpoint}-{round_}-{name.replace(' ', '-')}" for name in order
                }
                if args.together:
                    with ThreadPoolExecutor(len(order)) as pool:
                        futures = {
                            name: pool.submit(one_run, args, trees[name], endpoint, scratches[name]) for name in order
                        }
                    for name in order:
                        runs[name].append(futures[name].result())
                else:
                    for name in order:
                        runs[name].append(one_run(args, trees[name], endpoint, scratches[name]))
            print_runs(endpoint, runs)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
