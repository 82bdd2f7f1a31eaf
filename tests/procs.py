"""Real ``hitstream api`` and ``hitstream worker`` processes for tests, each logging to a file.

Tests that need a real API or worker start it this way, through the ``processes`` fixture
(registered for the whole suite by tests/conftest.py), and any other child process through
``commands``. Every log file and every store a helper creates is listed in ``ARTIFACTS`` so
the privacy scan (tests/privacy.py) can search them after the other tests ran. A chdb store
is read in a child process, because a chdb path may be open in one process only and the test
process must never hold one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
import rq
from rq.worker import WorkerStatus

from shared.lanes import LANE_KEYS
from shared.stack_dumps import DUMP_SIGNAL
from tests.ports import free_port
from tests.traffic import UNLIMITED

HITSTREAM = str(Path(sys.executable).with_name("hitstream"))
START_SECONDS = 30.0
# The RQ worker states set only once its signal handlers are installed (Worker.wait_ready).
WORKING = {WorkerStatus.IDLE, WorkerStatus.BUSY}
# The last line of a stack dump (see HitstreamProcess._whole_dumps), and how long
# ``dump_stacks`` waits for one.
DUMP_END = " in <module>"
DUMP_SECONDS = 5.0


# With several pytest processes (pytest-xdist, as .ci/run runs the suite) each one appends
# what its tests left behind to this file, and the privacy scan, run last, reads them all.
ARTIFACTS_FILE_VARIABLE = "HITSTREAM_TEST_ARTIFACTS"


@dataclass
class Artifacts:
    """What test processes left behind (logs, metrics pages, stores), for the privacy scan
    at the end of the run: this process's, plus those listed in $HITSTREAM_TEST_ARTIFACTS."""

    _logs: list[Path] = field(default_factory=list)
    _stores: list[Path] = field(default_factory=list)

    def add_log(self, path: Path) -> None:
        self._logs.append(path)
        self._share("log", path)

    def add_store(self, path: Path) -> None:
        if path not in self._stores:
            self._stores.append(path)
            self._share("store", path)

    @property
    def logs(self) -> list[Path]:
        return self._with_shared("log", self._logs)

    @property
    def stores(self) -> list[Path]:
        return self._with_shared("store", self._stores)

    def _share(self, kind: str, path: Path) -> None:
        if shared := os.environ.get(ARTIFACTS_FILE_VARIABLE):
            with open(shared, "a") as listing:  # one short line per write: appends never interleave
                listing.write(f"{kind}\t{path}\n")

    def _with_shared(self, kind: str, own: list[Path]) -> list[Path]:
        shared = os.environ.get(ARTIFACTS_FILE_VARIABLE)
        listed = Path(shared).read_text().splitlines() if shared and Path(shared).exists() else []
        paths = dict.fromkeys(
            [*own, *(Path(line.split("\t", 1)[1]) for line in listed if line.startswith(kind + "\t"))]
        )
        return list(paths)


ARTIFACTS = Artifacts()


# Runs a program with a Ctrl-C already held for it (SIGINT blocked and pending: the mask and a
# pending signal outlive exec): the state a Ctrl-C that comes after hitstream.launch holds the
# stop signals leaves, whatever moment of the load it came at.
HELD_CTRL_C = """
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
os.kill(os.getpid(), signal.SIGINT)
os.execv(sys.argv[1], sys.argv[1:])
"""


def drained(client: redis.Redis) -> bool:
    """No lane holds an entry or a leased batch: everything accepted was stored (or
    dead-lettered) and acknowledged."""
    return all(client.xlen(lane.stream) == 0 and client.zcard(lane.leases) == 0 for lane in LANE_KEYS.values())


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
    explain: Callable[[], str] | None = None,
) -> None:
    """Until ``condition()``; on a timeout, the message adds ``explain()`` (logs, state) if given."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def redis_clock_ms(client: redis.Redis) -> int:
    """Redis's clock, by which leases, ages and stream ids count (shared.lua)."""
    seconds, microseconds = client.time()
    return seconds * 1000 + microseconds // 1000


def wait_for_redis_clock(client: redis.Redis, at_ms: int) -> None:
    """Until Redis's clock reads ``at_ms`` or later: a wait for an age, on the clock that ages it."""
    wait_until(lambda: redis_clock_ms(client) >= at_ms, 60, f"Redis's clock to reach {at_ms}")


_LIBC = ctypes.CDLL(None, use_errno=True)


def _has_signal(status: str, mask: str, signum: int) -> bool:
    """``signum`` is in the mask named ``mask`` (SigBlk, SigCgt, ...) of a /proc status text."""
    return bool(int(status.split(f"{mask}:")[1].split()[0], 16) & (1 << (signum - 1)))


def signal_a_thread_other_than_main(pid: int, signum: int) -> None:
    """``signum`` to a thread of ``pid`` other than its main one that does not block it, as
    Linux may deliver a signal sent to the process (to any thread not blocking it; Python runs
    the handler in the main thread only)."""
    for task in sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda task: int(task.name)):
        tid = int(task.name)
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        if tid != pid and not _has_signal(status, "SigBlk", signum) and _LIBC.tgkill(pid, tid, signum) == 0:
            return
    raise AssertionError(f"process {pid} has no thread but its main one that takes signal {signum}")


def _catches(pid: int, signum: int) -> bool:
    """``pid`` has a handler for ``signum`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it ended
        return False
    return _has_signal(status, "SigCgt", signum)


class HitstreamProcess:
    """One ``hitstream`` sub-command with stdout and stderr in ``log``."""

    def __init__(self, arguments: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        ARTIFACTS.add_log(log)
        with open(log, "ab") as output:
            self.process = subprocess.Popen([HITSTREAM, *arguments], env=env, stdout=output, stderr=output)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a warm shutdown) and wait; returns the exit code. A process still running
        after ``timeout`` first writes where each of its threads is to its log, which the
        failed test's report shows (``pytest_runtest_makereport``)."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(AssertionError):  # a process that ended meanwhile dumps nothing
                self.dump_stacks()
            raise

    def dump_stacks(self) -> int:
        """Every thread's stack of this process and of the processes it started, written to its
        log (shared.stack_dumps); returns how many processes wrote one. One process at a time,
        each once its dump is whole (``DUMP_SECONDS`` at most), so dumps do not interleave. Only
        the processes that catch ``DUMP_SIGNAL`` are sent it: to another (CPython's resource
        tracker) it is fatal."""
        pids = [pid for pid in [self.pid, *(child.pid for child in self._children())] if _catches(pid, DUMP_SIGNAL)]
        for pid in pids:
            dumps = self._whole_dumps()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, DUMP_SIGNAL)
            wait_until(lambda before=dumps: self._whole_dumps() > before, DUMP_SECONDS, f"process {pid}'s stack dump")
        return len(pids)

    def _whole_dumps(self) -> int:
        # faulthandler writes the main thread's stack last, and it ends in the frame of the
        # process's first code (the hitstream script, or multiprocessing's spawn command).
        return sum(line.endswith(DUMP_END) for line in self.output().splitlines())

    def kill(self) -> None:
        """SIGKILL: a crash (of every process it started, too)."""
        if self.running():
            for child in self._children():
                child.kill()
            self.process.kill()
        self.process.wait()

    def _children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


class Api(HitstreamProcess):
    """``hitstream api`` on a free port; ``start`` waits until /healthz answers."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["api", "--port", str(self.port)], env, log)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.running(), f"hitstream api exited:\n{self.output()}"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, START_SECONDS, "hitstream api to answer /healthz", interval=0.05)

    def metrics(self) -> str:
        """The /metrics page, also kept next to the log for the privacy scan."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        saved = self.log.with_suffix(f".metrics-{time.monotonic_ns()}.txt")
        saved.write_text(text)
        ARTIFACTS.add_log(saved)
        return text


class Worker(HitstreamProcess):
    """``hitstream worker`` on a store: a chdb path, or a server DSN (``http://...``); with a
    short claim timeout so crashes heal fast."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        store: Path | str,
        batch_size: int = 1000,
        claim_timeout: float = 2.0,
        processes: int = 1,
    ) -> None:
        self.store = store
        if isinstance(store, Path):
            ARTIFACTS.add_store(store)
        env = {
            **env,
            "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}" if isinstance(store, Path) else store,
            "HITSTREAM_BATCH_SIZE": str(batch_size),
            "HITSTREAM_CLAIM_TIMEOUT": str(claim_timeout),
        }
        super().__init__(["worker", "--processes", str(processes)], env, log)

    def pids(self) -> set[int]:
        """This worker's process and the processes it started (with --processes N)."""
        return {self.pid, *(child.pid for child in self._children())}

    def wait_ready(self, client: redis.Redis, timeout: float = START_SECONDS) -> None:
        """Until one of its RQ workers works its queues, so a SIGTERM is a warm shutdown.

        RQ 2.12's ``Worker.work`` registers the worker (state ``started``), then installs its
        SIGTERM/SIGINT handlers, and only then enters the loop that sets ``idle`` (before
        each dequeue) or ``busy`` (running a job): either state, read from Redis, says the
        handlers are in place (rq/worker/base.py: ``work``, ``dequeue_job_and_maintain_ttl``)."""

        def working() -> bool:
            assert self.running(), f"hitstream worker exited:\n{self.output()}"
            ours = [worker for worker in rq.Worker.all(connection=client) if worker.pid in self.pids()]
            return any(worker.get_state() in WORKING for worker in ours)

        wait_until(working, timeout, "hitstream worker to work its queues", interval=0.05)


class Processes:
    """Starts processes for one test, numbering their logs, and kills any still running."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[HitstreamProcess] = []

    def _log(self, kind: str) -> Path:
        return self.log_dir / f"{kind}-{len(self.started)}.log"

    def api(self, port: int | None = None, **settings: str) -> Api:
        api = Api({**self.env, **settings}, self._log("api"), port)
        self.started.append(api)
        return api

    def worker(
        self, store: Path | str, batch_size: int = 1000, claim_timeout: float = 2.0, processes: int = 1, **settings: str
    ) -> Worker:
        worker = Worker({**self.env, **settings}, self._log("worker"), store, batch_size, claim_timeout, processes)
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


class Commands:
    """Any other child processes of one test: commands it runs to their end (``run``) or
    starts (``start``, killed at the test's end if still running)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def run(self, arguments: list[str], **options: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(arguments, **options)

    def start(self, arguments: list[str], **options: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(arguments, **options)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def commands() -> Iterator[Commands]:
    """For a test that starts child processes itself, or whose code under test does: puts it
    in the processes tier (tests/tiers.py)."""
    started = Commands()
    yield started
    started.kill_all()


@pytest.fixture
def processes(hitstream_env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    """Processes on this test's Redis and chdb path, without rate limits and with a Redis
    timeout generous enough for a loaded CI machine (tests of the timeout set their own)."""
    started = Processes({**hitstream_env, **UNLIMITED, "HITSTREAM_REDIS_TIMEOUT_MS": "2000"}, tmp_path)
    yield started
    started.kill_all()


# How much of each process's log a failed test's report shows.
FAILURE_LOG_LINES = 300


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report ends with the last lines of each log of its ``processes``: .ci/run
    deletes the run's directory when it ends, and a chance failure's logs are its only trace
    (2026-12-07: a worker that did not stop within 20 s of SIGTERM, its log gone). The logs
    hold no visitor IP or token (tests/test_privacy_scan.py)."""
    report = yield
    started = getattr(item, "funcargs", {}).get("processes")
    if report.failed and isinstance(started, Processes):
        for process in started.started:
            if process.log.exists():
                lines = process.output().splitlines()[-FAILURE_LOG_LINES:]
                report.sections.append((f"{process.log.name}, its last {len(lines)} lines", "\n".join(lines)))
    return report


# Runs in a child process: prints every stored page_id and the drop counts as JSON.
_READ_STORE = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
pages = [str(row[0]) for row in client.query("SELECT page_id FROM pageviews").result_rows]
drops = dict(client.query("SELECT reason, sum(count) FROM drop_counts GROUP BY reason").result_rows)
print(json.dumps({"pages": pages, "drops": {k: int(v) for k, v in drops.items()}}))
"""


def stored_pages(store: Path) -> tuple[Counter[str], dict[str, int]]:
    """The page_ids stored (with multiplicity) and drop counts by reason; the store's worker
    must have stopped."""
    output = subprocess.run([sys.executable, "-c", _READ_STORE, str(store)], capture_output=True, check=True, text=True)
    result = json.loads(output.stdout.strip().splitlines()[-1])
    return Counter(result["pages"]), result["drops"]


# Runs in a child process: migrates the store, runs one statement, prints its rows as JSON
# (UUIDs and times as text).
_STORE_STATEMENT = """
import json, sys
from workers.store.store import open_store
store = open_store("chdb://" + sys.argv[1])
store.migrate()
if sys.argv[3] == "query":
    rows = store._client.query(sys.argv[2]).result_rows
else:
    store._client.command(sys.argv[2])
    rows = []
print(json.dumps(rows, default=str))
"""


def _on_store(store: Path, sql: str, kind: str) -> list[list[Any]]:
    ARTIFACTS.add_store(store)
    output = subprocess.run(
        [sys.executable, "-c", _STORE_STATEMENT, str(store), sql, kind], capture_output=True, check=True, text=True
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def alter_store(store: Path, sql: str) -> None:
    """Run one DDL statement on a (migrated) chdb store that no process has open."""
    _on_store(store, sql, "command")


def query_store(store: Path, sql: str) -> list[list[Any]]:
    """The rows of one query on a chdb store that no process has open (UUIDs, times as text)."""
    return _on_store(store, sql, "query")
