"""The worker, end to end: where a batch's time goes, what each overlap of the batch loop
pays, the scale-out curve on one embedded store, and the naive design, all in one run.

    .venv/bin/python -m bench.worker_bench [--pageviews 100000] [--rounds 2] [--batch-size 1000]
        [--naive 2000] [--processes 1,2,4] [--sections overlaps,scale-out,naive,modes]

Starts its own Redis (AOF on, free port). Every end-to-end run starts worker processes on a
fresh chdb path; once they are registered (store opened, pipeline built) they drain
``--warm-up`` envelopes untimed (steady state: each process's user-agent cache holds the head
of the mix, as in a service that has run for minutes; cold, each process parses every
distinct user agent it sees: 2,294 in 30,000 pageviews of the mix). Then ``--pageviews``
envelopes (realistic user-agent mix from bench/ua_mix.py, varied paths, referrers, UTM tags
and IPs) are appended to the live stream in one MULTI, so the whole backlog appears at once;
the bench times from then until the stream is empty (the last acknowledgement follows the
last insert), then checks the stored row count.
Sections, each printed beside its same-run baseline:

1. breakdown: inside the worker processes of section 2 (no overlaps, and both), the time in
   each stage: claim (with reading the reply), decode, pipeline, Arrow build, insert,
   acknowledge (each stage wrapped in a timer, ~0.3 µs per call); "other / waiting" is the
   wall time beyond them (RQ, dispatcher, leases, scheduling, waiting for the machine).
2. overlaps: one worker process with the batch loop's overlaps (workers.batch.loop) none,
   claim-ahead, write-behind, both; rounds interleaved.
3. scale-out: ``hitstream worker -n N`` for each N (1: the single process that stores its own
   batches; N > 1: N enrichers and one writer), rounds interleaved; prints events/s, the ratio
   to N = 1, and the writer's CPU time as a share of the wall time (near 100%: the single chdb
   writer is the limit).
4. naive: one RQ job per pageview, each running the same pipeline and a single-row insert.
5. fsync (not run unless named in ``--sections``): one worker process (write-behind, the
   default) on a store whose tables fsync the parts inserts write and whose deduplication logs
   the writer fsyncs (as shipped: "on"), against the same with only the table settings
   ("settings": the logs left to ClickHouse) and with neither ("off": the settings set back
   to 0 after migrating); rounds interleaved, the ratio to "off" per round and overall.
6. modes: one ``hitstream worker`` process (the defaults) in each durability mode
   (shared.durability), on that mode's Redis server(s) (bench/bench_redis.py): relaxed
   (``appendfsync everysec``), fsync (``appendfsync always``: every write the worker sends,
   its claims, acknowledgements and heartbeats, waits for its fsync) and replicated (that, one
   replica on this machine, and a ``WAIT`` for it after each claim); rounds interleaved;
   prints events/s and the ratio to relaxed per round.

Figures taken on a machine shared with other work are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
import rq
from rq import Queue

from bench.bench_redis import rewrite_aof, start_mode
from bench.ua_mix import user_agent_stream
from hitstream.redis_server import RedisServer
from shared import keys
from shared.config import load_settings
from shared.durability import Durability
from shared.envelope import Envelope
from tests.ports import free_port
from workers.batch import delivery, loop
from workers.batch.loop import Overlaps
from workers.batch.queue import BatchQueue
from workers.pipeline import StepFailed
from workers.runtime.context import WorkerContext
from workers.runtime.processes import BatchWorker, Role, run_worker_process
from workers.store import blocks
from workers.store.deduplication_logs import DeduplicationLogs
from workers.store.schema import DROP_COUNTS, EVENTS, PAGEVIEWS, SCHEMA_MIGRATIONS
from workers.store.store import Store, open_store

NAIVE_QUEUE = "bench-naive"
SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"
REFERRERS = [None, None, None, "https://www.google.com/", "https://news.ycombinator.com/", "https://example.com/"]
PATHS = ["/", "/pricing", "/blog/queues", "/docs/install?utm_source=newsletter&utm_medium=email", "/about"]
HITSTREAM = str(Path(sys.executable).parent / "hitstream")
MODES = (Durability.RELAXED, Durability.FSYNC, Durability.REPLICATED)  # section 5, relaxed first: the ratios' base
OVERLAPS = {
    "none": Overlaps(claim_ahead=False, write_behind=False),
    "claim-ahead": Overlaps(claim_ahead=True, write_behind=False),
    "write-behind": Overlaps(claim_ahead=False, write_behind=True),
    "both": Overlaps(claim_ahead=True, write_behind=True),
}

COUNT_ROWS = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print(client.query("SELECT count() FROM pageviews").result_rows[0][0])
"""


def envelopes(count: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
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
        for user_agent in user_agent_stream(count, seed=seed)
    ]


def fill_stream(client: redis.Redis, data: list[bytes], at_once: bool = False) -> None:
    """Append ``data`` to the live stream; ``at_once``: in one MULTI, so waiting workers see
    the whole backlog appear at one moment."""
    with client.pipeline(transaction=at_once) as pipe:
        for n, payload in enumerate(data):
            pipe.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: payload})
            if n % 5000 == 4999 and not at_once:
                pipe.execute()
        pipe.execute()


def stored_rows(path: Path) -> int:
    output = subprocess.run([sys.executable, "-c", COUNT_ROWS, str(path)], capture_output=True, text=True, check=True)
    return int(output.stdout.strip().splitlines()[-1])


@dataclass
class Run:
    events_per_second: float
    writer_cpu_share: float | None  # the writer's CPU seconds / wall seconds (N > 1 only)
    seconds: float
    stages: dict[str, float] | None = None  # seconds per stage (bench workers only)


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _registered(client: redis.Redis, queue: str, pids: set[int]) -> list[int]:
    workers = rq.Worker.all(connection=client, queue=rq.Queue(queue, connection=client))
    return [worker.pid for worker in workers if worker.pid in pids]


def end_to_end(
    client: redis.Redis,
    env: dict[str, str],
    store: Path,
    data: list[bytes],
    command: list[str],
    batch_size: int,
    enrichers: int = 1,
    timings: Path | None = None,
    warm_up: list[bytes] | None = None,
    replicas: Sequence[redis.Redis] = (),
) -> Run:
    """Start the worker ``command``; once its processes are ready (``enrichers`` on the batch
    queue, and a writer when there are several), put ``data`` in the stream at once and time
    until it is drained; events/s. With ``replicas``, the clock starts once they hold the
    backlog too: until then no claim can be acknowledged by them (replicated mode), and a
    backlog that appears at once is this bench's doing."""
    client.flushall()
    count = len(data)
    worker_env = {**env, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}", "HITSTREAM_BATCH_SIZE": str(batch_size)}
    log = store.with_suffix(".log")  # the worker's stderr: what a worker that stopped said
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, env=worker_env, stdout=subprocess.DEVNULL, stderr=log_file)

    def check_alive() -> None:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(command)} exited with code {process.returncode}:\n{tail}")

    try:
        writer: int | None = None
        while True:
            pids = {process.pid, *(child.pid for child in psutil.Process(process.pid).children())}
            writers = _registered(client, keys.STORE_QUEUE, pids) if enrichers > 1 else []
            if len(_registered(client, keys.BATCH_QUEUE, pids)) == enrichers and len(writers) == (enrichers > 1):
                writer = writers[0] if writers else None
                break
            check_alive()
            time.sleep(0.05)
        time.sleep(0.5)  # the pipeline and the store are loaded right before registering
        if warm_up:
            # Steady state: the per-process user-agent caches hold the head of the mix, as in
            # a service that has run for minutes.
            fill_stream(client, warm_up, at_once=True)
            while client.xlen(keys.STREAM) > 0:
                check_alive()
                time.sleep(0.01)
            if timings is not None:
                process.send_signal(signal.SIGUSR2)  # the bench worker's stage timers start over
            time.sleep(0.2)
        fill_stream(client, data, at_once=True)
        filled = client.info("replication")["master_repl_offset"]
        for replica in replicas:
            while replica.info("replication")["slave_repl_offset"] < filled:
                time.sleep(0.002)
        started = time.perf_counter()
        writer_cpu = _cpu_seconds(writer) if writer else 0.0
        while client.xlen(keys.STREAM) > 0:
            check_alive()
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        share = (_cpu_seconds(writer) - writer_cpu) / elapsed if writer else None
    finally:
        process.terminate()
        process.wait(60)
    rows = stored_rows(store) - len(warm_up or [])
    if rows != count:
        raise SystemExit(f"{' '.join(command[-3:])}: stored {rows} rows for {count} pageviews")
    stages = json.loads(timings.read_text()) if timings is not None else None
    return Run(count / elapsed, share, elapsed, stages)


STAGES = ("claim", "decode", "pipeline", "Arrow build", "insert", "acknowledge")


def _timed(owner: object, name: str, stage: str, spent: dict[str, float], static: bool = False) -> None:
    """Replace ``owner.name`` by a wrapper adding its run time to ``spent[stage]``."""
    original = getattr(owner, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[stage] += time.perf_counter() - started

    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def run_bench_worker(overlaps: str, timings: Path) -> None:
    """In a child process: one worker process with the named overlaps (section 2), its stages
    timed (section 1; each stage runs on one thread, so a stage's total is that thread's time
    in it); the totals are written to ``timings`` at its warm shutdown."""
    spent = dict.fromkeys([*STAGES, "enrich"], 0.0)
    _timed(BatchQueue, "claim", "claim", spent)
    _timed(Envelope, "from_json", "decode", spent, static=True)
    _timed(loop, "enrich", "enrich", spent)
    _timed(blocks, "arrow_table", "Arrow build", spent)
    _timed(Store, "_insert", "insert", spent)
    _timed(delivery, "acknowledge", "acknowledge", spent)
    signal.signal(signal.SIGUSR2, lambda signum, frame: spent.update(dict.fromkeys(spent, 0.0)))
    run_worker_process(Role.WORKER, OVERLAPS[overlaps])
    spent["pipeline"] = spent.pop("enrich") - spent["decode"]
    timings.write_text(json.dumps(spent))


# fsync section: variant -> (the tables' fsync settings, the writer fsyncs deduplication logs).
FSYNC_VARIANTS = {"off": (False, False), "settings": (True, False), "on": (True, True)}


def run_fsync_worker(variant: str) -> None:
    """In a child process: one worker process (default overlaps) that fsyncs the deduplication
    logs or not, as ``variant`` says (section 5)."""
    if not FSYNC_VARIANTS[variant][1]:
        DeduplicationLogs.sync = lambda self, tables: None  # type: ignore[method-assign]
    run_worker_process(Role.WORKER, OVERLAPS["write-behind"])


def prepare_fsync_store(path: Path, variant: str) -> None:
    """In a child process: migrate the store at ``path``; for a variant without the fsync
    settings, set them back to ClickHouse's default (0) on every table."""
    store = open_store(f"chdb://{path}")
    store.migrate()
    if not FSYNC_VARIANTS[variant][0]:
        for table in (SCHEMA_MIGRATIONS, PAGEVIEWS, DROP_COUNTS, EVENTS):
            store._client.command(
                f"ALTER TABLE {table.name} MODIFY SETTING fsync_after_insert = 0, fsync_part_directory = 0"
            )
    store.close()


def naive_job(context: WorkerContext, payload: bytes) -> None:
    """The naive design: one job per pageview, one single-row insert each."""
    try:
        outcome = context.pipeline().process(Envelope.from_json(payload))
    except StepFailed:
        return
    if isinstance(outcome, tuple):  # the pageview, and its crawler hit if a crawler sent it
        context.store.get().write_batch(str(uuid.uuid4()), list(outcome), [])


def run_naive_worker() -> None:
    """In a child process: warm the pipeline and store, then drain the naive queue (burst)."""
    context = WorkerContext.build(load_settings())
    context.pipeline()
    context.store.get()
    queue = Queue(NAIVE_QUEUE, connection=context.redis)
    count = queue.count
    started = time.perf_counter()
    BatchWorker(context, [queue]).work(burst=True, logging_level="WARNING")
    print(count / (time.perf_counter() - started))


def naive_design(client: redis.Redis, env: dict[str, str], store: Path, count: int) -> float:
    client.flushall()
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


def interleaved(rounds: int, variants: dict[str, Callable[[Path], Run]], scratch: Path) -> dict[str, list[Run]]:
    """Each variant once per round, in the same order, each on a fresh store."""
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for name, run in variants.items():
            runs[name].append(run(scratch / f"store-{name}-{round_}"))
    return runs


def mode_runs(
    rounds: int, data: list[bytes], warm_up: list[bytes], batch_size: int, scratch: Path
) -> dict[str, list[Run]]:
    """Section 5: one ``hitstream worker`` process in each durability mode."""
    with ExitStack() as stack:
        variants: dict[str, Callable[[Path], Run]] = {}
        for mode in MODES:
            servers = start_mode(stack, scratch, mode)
            clients = [redis.Redis(host=server.host, port=server.port) for server in servers]
            env = {
                **os.environ,
                "HITSTREAM_REDIS_URL": servers[0].url,
                "HITSTREAM_LOG_LEVEL": "WARNING",
                "HITSTREAM_DURABILITY": str(mode),
                "HITSTREAM_MIN_REPLICAS": str(max(len(servers) - 1, 1)),
            }

            def run(store: Path, clients: list[redis.Redis] = clients, env: dict[str, str] = env) -> Run:  # per mode
                command = [HITSTREAM, "worker", "--processes", "1"]
                result = end_to_end(clients[0], env, store, data, command, batch_size, 1, None, warm_up, clients[1:])
                for client in clients:
                    rewrite_aof(client)
                return result

            variants[str(mode)] = run
        return interleaved(rounds, variants, scratch)


def median_rate(runs: list[Run]) -> float:
    return statistics.median(run.events_per_second for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pageviews", type=int, default=100_000)
    parser.add_argument(
        "--warm-up", type=int, default=20_000, help="pageviews each worker drains before the timed ones"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of sections 2 and 3")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--naive", type=int, default=2000, help="pageviews for the naive design")
    parser.add_argument("--processes", default="1,2,4", help="scale-out: worker process counts")
    parser.add_argument("--sections", default="overlaps,scale-out,naive,modes", help="which of them to run")
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bench-worker", nargs=2, metavar=("OVERLAPS", "TIMINGS"), help=argparse.SUPPRESS)
    parser.add_argument("--fsync-worker", choices=FSYNC_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--fsync-store", nargs=2, metavar=("PATH", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fsync_worker:
        run_fsync_worker(args.fsync_worker)
        return
    if args.fsync_store:
        prepare_fsync_store(Path(args.fsync_store[0]), args.fsync_store[1])
        return
    if args.naive_worker:
        run_naive_worker()
        return
    if args.bench_worker:
        run_bench_worker(args.bench_worker[0], Path(args.bench_worker[1]))
        return

    data = envelopes(args.pageviews)
    warm_up = envelopes(args.warm_up, seed=12)
    counts = [int(n) for n in args.processes.split(",")]
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory(prefix="hitstream-worker-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        server = RedisServer(port=free_port(), data_dir=scratch / "redis")
        server.start()
        try:
            client = redis.Redis.from_url(server.url)
            env = {**os.environ, "HITSTREAM_REDIS_URL": server.url, "HITSTREAM_LOG_LEVEL": "WARNING"}
            os.environ.update(env)

            def e2e(command: list[str], enrichers: int = 1) -> Callable[[Path], Run]:
                return lambda store: end_to_end(
                    client, env, store, data, command, args.batch_size, enrichers, None, warm_up
                )

            def bench_worker(overlaps: str) -> Callable[[Path], Run]:
                def run(store: Path) -> Run:
                    timings = store.with_suffix(".timings.json")
                    command = [sys.executable, "-m", "bench.worker_bench", "--bench-worker", overlaps, str(timings)]
                    return end_to_end(client, env, store, data, command, args.batch_size, 1, timings, warm_up)

                return run

            overlap_variants = {name: bench_worker(name) for name in OVERLAPS if "overlaps" in sections}
            overlap_runs = interleaved(args.rounds, overlap_variants, scratch / "overlaps")
            scale_variants = {
                str(n): e2e([HITSTREAM, "worker", "--processes", str(n)], n) for n in counts if "scale-out" in sections
            }
            scale_runs = interleaved(args.rounds, scale_variants, scratch / "scale")
            naive_rate = naive_design(client, env, scratch / "naive", args.naive) if "naive" in sections else None

            def fsync_worker(variant: str) -> Callable[[Path], Run]:
                def run(store: Path) -> Run:
                    bench = [sys.executable, "-m", "bench.worker_bench"]
                    subprocess.run([*bench, "--fsync-store", str(store), variant], env=env, check=True)
                    command = [*bench, "--fsync-worker", variant]
                    return end_to_end(client, env, store, data, command, args.batch_size, 1, None, warm_up)

                return run

            fsync_variants = {name: fsync_worker(name) for name in FSYNC_VARIANTS if "fsync" in sections}
            fsync_runs = interleaved(args.rounds, fsync_variants, scratch / "fsync")
        finally:
            server.stop()
        mode_results = (
            mode_runs(args.rounds, data, warm_up, args.batch_size, scratch / "modes") if "modes" in sections else {}
        )
        if overlap_runs:
            print_overlaps(overlap_runs, args.pageviews, args.rounds, args.batch_size)
        if scale_runs:
            print_scale_out(scale_runs, counts, args.pageviews, args.rounds)
        if naive_rate is not None:
            batch_runs = scale_runs.get("1") or overlap_runs.get("both") or []
            print(f"4. naive design ({args.naive} pageviews, one RQ job + one insert each): {naive_rate:,.0f} events/s")
            if batch_runs:
                print(f"   batch design, 1 process / naive: {median_rate(batch_runs) / naive_rate:.1f}x")
        if fsync_runs:
            print_fsync(fsync_runs, args.pageviews, args.rounds)
        if mode_results:
            print_modes(mode_results, args.pageviews, args.rounds)
        print(f"   (targets: one process >= 20,000 events/s; 2 processes >= 1.6x one; cores: {os.cpu_count()})")


def print_overlaps(overlap_runs: dict[str, list[Run]], pageviews: int, rounds: int, batch_size: int) -> None:

    print(f"1. where a batch's time goes: µs per event (share of the wall time), first round, batch size {batch_size}")
    print(f"   {'stage':<24}" + "".join(f"{name:>22}" for name in ("none", "both")))
    for stage in (*STAGES, "other / waiting", "wall"):
        cells = []
        for name in ("none", "both"):
            run = overlap_runs[name][0]
            assert run.stages is not None
            seconds = {
                "other / waiting": run.seconds - sum(run.stages.values()),
                "wall": run.seconds,
            }.get(stage, run.stages.get(stage, 0.0))
            if stage == "other / waiting" and name == "both":
                cells.append("-")  # stages overlap: the wall time beyond them is not their sum's remainder
            else:
                cells.append(f"{seconds / pageviews * 1e6:10.1f} ({seconds / run.seconds:5.0%})")
        print(f"   {stage:<24}" + "".join(f"{cell:>22}" for cell in cells))
    print("   (with both overlaps, stages run on three threads at once: shares add up past 100%)")
    print(f"2. overlaps, 1 worker process, {pageviews} pageviews, median of {rounds} interleaved rounds:")
    baseline = median_rate(overlap_runs["none"])
    for name, runs in overlap_runs.items():
        rates = ", ".join(f"{run.events_per_second:,.0f}" for run in runs)
        print(f"   {name:<13} {median_rate(runs):9,.0f} events/s  {median_rate(runs) / baseline:5.2f}x none  ({rates})")


def print_scale_out(scale_runs: dict[str, list[Run]], counts: list[int], pageviews: int, rounds: int) -> None:
    print(f"3. scale-out on one embedded store, {pageviews} pageviews, median of {rounds} interleaved rounds:")
    one = median_rate(scale_runs[str(counts[0])])
    for n in counts:
        runs = scale_runs[str(n)]
        shares = [run.writer_cpu_share for run in runs if run.writer_cpu_share is not None]
        writer = f"writer CPU {statistics.median(shares):4.0%} of wall time" if shares else "stores its own batches"
        print(f"   {n} process(es) {median_rate(runs):9,.0f} events/s  {median_rate(runs) / one:5.2f}x  {writer}")


def print_fsync(fsync_runs: dict[str, list[Run]], pageviews: int, rounds: int) -> None:
    print(f"5. fsync, 1 worker process, {pageviews} pageviews, median of {rounds} interleaved rounds:")
    off = fsync_runs["off"]
    for name, runs in fsync_runs.items():
        ratios = ", ".join(
            f"{run.events_per_second / base.events_per_second:.2f}" for run, base in zip(runs, off, strict=True)
        )
        rates = ", ".join(f"{run.events_per_second:,.0f}" for run in runs)
        print(
            f"   {name:<9} {median_rate(runs):9,.0f} events/s  {median_rate(runs) / median_rate(off):5.2f}x off"
            f"  (rounds: {rates}; per round / off: {ratios})"
        )


def print_modes(runs_by_mode: dict[str, list[Run]], pageviews: int, rounds: int) -> None:
    print(f"6. durability modes, 1 worker process, {pageviews} pageviews, median of {rounds} interleaved rounds:")
    relaxed = runs_by_mode[Durability.RELAXED]
    for mode, runs in runs_by_mode.items():
        rates = ", ".join(f"{run.events_per_second:,.0f}" for run in runs)
        ratios = [run.events_per_second / base.events_per_second for run, base in zip(runs, relaxed, strict=True)]
        print(
            f"   {mode:<10} {median_rate(runs):9,.0f} events/s  ({rates}); x relaxed per round: "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            + f"; median {statistics.median(ratios):.2f}x"
        )


if __name__ == "__main__":
    main()
