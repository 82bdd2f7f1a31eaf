"""SIGUSR1 to a running hitstream process writes where each of its threads is to the process's
log, and the process goes on (shared.stack_dumps): the API, a worker, and each process of a
supervised worker. Tests use it on a process that does not stop in time (tests/procs.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from tests.procs import DUMP_END, Processes


def frames(log: str) -> str:
    """The stack frames written to ``log`` (faulthandler's ``  File "...", line N in f`` lines)."""
    return "\n".join(line for line in log.splitlines() if line.startswith('  File "'))


def test_the_api_writes_its_threads_stacks_on_sigusr1_and_goes_on_answering(processes: Processes) -> None:
    api = processes.api()
    assert DUMP_END not in api.output()

    assert api.dump_stacks() == 1

    assert "/hitstream/commands/api.py" in frames(api.output())  # the main thread, in uvicorn's run
    assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
    assert api.stop() == -15  # uvicorn re-raises SIGTERM once it has shut down gracefully


def test_a_worker_writes_its_threads_stacks_on_sigusr1_and_still_stops_warm(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    worker = processes.worker(tmp_path / "store")
    worker.wait_ready(real_redis)

    assert worker.dump_stacks() == 1

    stacks = frames(worker.output())
    assert " in run_worker_process" in stacks
    assert worker.stop() == 0


def test_each_process_of_a_supervised_worker_writes_its_stacks_on_sigusr1(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    worker = processes.worker(tmp_path / "store", processes=2)
    worker.wait_ready(real_redis)

    # The supervisor and its children (the writer, two enrichers), not CPython's resource tracker.
    assert worker.dump_stacks() == 4

    stacks = frames(worker.output())
    assert stacks.count(" in run_processes\n") == 1  # the supervisor's main thread
    assert stacks.count(" in _run_child\n") == 3  # each child's main thread
    assert worker.stop() == 0
