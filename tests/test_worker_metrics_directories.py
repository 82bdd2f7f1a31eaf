"""The metrics directory of ``hitstream worker`` (prometheus-client's multiprocess files): real
worker processes, each with TMPDIR pointed at a folder of this test's own, leave no directory
behind however they stop (SIGTERM or SIGINT, while starting or working: a warm shutdown either
way; a start that fails), and a start removes the directories of worker commands that are gone
(SIGKILLed), never those of one that runs; its lock decides, not the pid in its name (pids are
reused)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.ports import free_port
from tests.procs import HITSTREAM, START_SECONDS, Processes, Worker, wait_until
from workers.host.metrics_directory import LOCK_NAME, PREFIX
from workers.store.dsn import own_chdb_path


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    """The workers' TMPDIR: only this test's directories are in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def metrics_directories(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(PREFIX))


@dataclass
class MetricsWorker:
    worker: Worker
    port: int

    def answering(self) -> bool:
        assert self.worker.running(), f"hitstream worker exited:\n{self.worker.output()}"
        try:
            return "hitstream_worker_processes" in httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.TransportError:
            return False

    def directory_name(self) -> str:
        """The start of its directory's name: the prefix and its pid."""
        return f"{PREFIX}{self.worker.pid}-"


def start_worker(processes: Processes, temp_dir: Path, store: Path, count: int = 1) -> MetricsWorker:
    """``hitstream worker -n count`` serving its metrics, once the endpoint answers (its
    directory exists then; the workers may still be starting)."""
    port = free_port()
    worker = processes.worker(store, processes=count, TMPDIR=str(temp_dir), HITSTREAM_WORKER_METRICS_PORT=str(port))
    started = MetricsWorker(worker, port)
    wait_until(started.answering, START_SECONDS, "the worker metrics endpoint")
    return started


@pytest.mark.parametrize("moment", ["starting", "working"])
@pytest.mark.parametrize("count", [1, 2], ids=["one process", "a supervisor of two"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_worker_stopped_by_a_signal_leaves_no_metrics_directory(
    processes: Processes,
    real_redis: redis.Redis,
    temp_dir: Path,
    tmp_path: Path,
    signum: signal.Signals,
    count: int,
    moment: str,
) -> None:
    started = start_worker(processes, temp_dir, tmp_path / "store", count)
    (directory,) = metrics_directories(temp_dir)
    assert directory.startswith(started.directory_name())
    if moment == "working":
        started.worker.wait_ready(real_redis)
    started.worker.process.send_signal(signum)
    # A warm shutdown, even while it starts: the stop waits for its watch (shared.stop_signals).
    assert started.worker.process.wait(60) == 0
    assert metrics_directories(temp_dir) == []


@pytest.mark.parametrize(
    "failure",
    [
        "metrics port in use",
        "Redis does not answer",
        "Redis takes connections and never answers",
        "store owned by another worker",
    ],
)
@pytest.mark.usefixtures("commands")  # runs hitstream worker itself
def test_a_worker_that_fails_to_start_leaves_no_metrics_directory(
    hitstream_env: dict[str, str], temp_dir: Path, tmp_path: Path, failure: str
) -> None:
    store = tmp_path / "store"
    env = {**hitstream_env, "TMPDIR": str(temp_dir), "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env["HITSTREAM_WORKER_METRICS_PORT"] = str(
            taken.getsockname()[1] if failure == "metrics port in use" else free_port()
        )
        if failure == "Redis does not answer":
            env["HITSTREAM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
        if failure == "Redis takes connections and never answers":
            # The listening socket's backlog completes the handshake; nothing ever replies.
            env["HITSTREAM_REDIS_URL"] = f"redis://127.0.0.1:{taken.getsockname()[1]}/0"
        owner_lock = own_chdb_path(store) if failure == "store owned by another worker" else None
        try:
            result = subprocess.run([HITSTREAM, "worker"], env=env, capture_output=True, text=True, timeout=60)
        finally:
            if owner_lock is not None:
                os.close(owner_lock)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert metrics_directories(temp_dir) == []


def test_the_directory_a_killed_worker_left_is_removed_by_the_next_start(
    processes: Processes, real_redis: redis.Redis, temp_dir: Path, tmp_path: Path
) -> None:
    killed = start_worker(processes, temp_dir, tmp_path / "first", count=2)
    killed.worker.wait_ready(real_redis)
    killed.worker.kill()  # SIGKILL, to the supervisor and its processes: nothing runs a finally
    (left,) = metrics_directories(temp_dir)
    assert left.startswith(killed.directory_name())

    second = start_worker(processes, temp_dir, tmp_path / "second")
    (directory,) = metrics_directories(temp_dir)
    assert directory.startswith(second.directory_name())
    second.worker.stop()
    assert metrics_directories(temp_dir) == []


def test_a_running_workers_directory_is_kept_by_another_workers_start(
    processes: Processes, real_redis: redis.Redis, temp_dir: Path, tmp_path: Path
) -> None:
    first = start_worker(processes, temp_dir, tmp_path / "first")
    first.worker.wait_ready(real_redis)
    second = start_worker(processes, temp_dir, tmp_path / "second")
    names = metrics_directories(temp_dir)
    assert len(names) == 2
    assert {name.rsplit("-", 1)[0] + "-" for name in names} == {first.directory_name(), second.directory_name()}
    assert first.answering()
    first.worker.stop()
    second.worker.stop()
    assert metrics_directories(temp_dir) == []


def test_a_start_sweeps_by_the_owners_lock_not_by_the_pid_in_the_name(
    processes: Processes, temp_dir: Path, tmp_path: Path
) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    live, dead = os.getpid(), exited.pid
    # Left by an owner that died; its pid now names a live process (this one): swept.
    (temp_dir / f"{PREFIX}{live}-reused").mkdir()
    (temp_dir / f"{PREFIX}{live}-reused" / LOCK_NAME).touch()
    (temp_dir / f"{PREFIX}{live}-reused" / "counter_4242.db").write_bytes(b"\0" * 4096)
    # Its lock held: its owner runs, whatever its pid says: kept.
    (temp_dir / f"{PREFIX}{dead}-held").mkdir()
    held = os.open(temp_dir / f"{PREFIX}{dead}-held" / LOCK_NAME, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    # No lock yet: an owner making its directory (kept while its pid lives) or one that died
    # before locking it (swept).
    (temp_dir / f"{PREFIX}{live}-starting").mkdir()
    (temp_dir / f"{PREFIX}{dead}-crashed").mkdir()
    # The earlier naming, without pid or lock: nothing tells whether it is in use, so kept.
    (temp_dir / f"{PREFIX}k3j4l5m6").mkdir()
    try:
        started = start_worker(processes, temp_dir, tmp_path / "store")
        own = [name for name in metrics_directories(temp_dir) if name.startswith(started.directory_name())]
        assert metrics_directories(temp_dir) == sorted(
            [*own, f"{PREFIX}{dead}-held", f"{PREFIX}{live}-starting", f"{PREFIX}k3j4l5m6"]
        )
        assert len(own) == 1
        started.worker.stop()
    finally:
        os.close(held)
    assert metrics_directories(temp_dir) == sorted(
        [f"{PREFIX}{dead}-held", f"{PREFIX}{live}-starting", f"{PREFIX}k3j4l5m6"]
    )
