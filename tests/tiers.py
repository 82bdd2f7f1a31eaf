"""Test tiers, set from what a test uses, and the guard that keeps them honest.

Every test is in exactly one tier, named by its marker:

- ``unit``: in this process only (fakeredis, an embedded chdb store, a server on a thread);
- ``redis``: the suite's shared real Redis server (``redis_server`` and every fixture built on
  it: ``redis_url``, ``real_redis``, ``world``, ``hitstream_env``, ...);
- ``processes``: starts processes or servers of its own (``hitstream`` commands, Redis
  servers, Sentinels, the ClickHouse HTTP fixture, a chdb store read in a child process, ...).

A test's tier is that of the highest tier among the fixtures it requests, directly or through
other fixtures (``item.fixturenames`` is that closure), looked up in ``TIER_FIXTURES``; nothing
is marked by hand. ``unit`` and ``redis`` make the fast tier (README, "Development").

A test outside the processes tier that starts a process anyway fails at once, naming the
fixture table to fix (``processes_only_in_their_tier``): a process it starts unnoticed would make the fast
tier slow, or flaky, again. Only the shared Redis server itself may start (``shared_server``).
"""

from __future__ import annotations

import multiprocessing.process
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

UNIT, REDIS, PROCESSES = "unit", "redis", "processes"
TIERS = (UNIT, REDIS, PROCESSES)  # lowest first: a test takes the highest its fixtures need

# The fixtures that make a test need more than its own process; a fixture built on one of
# these needs no entry (the closure holds both).
TIER_FIXTURES = {
    REDIS: frozenset({"redis_server"}),
    PROCESSES: frozenset(
        {
            "processes",  # hitstream api / worker processes (tests/procs.py)
            "own_redis",  # a Redis server of the test's own
            "everysec_redis",  # tests/test_durability.py
            "config_refusing_redis",  # tests/test_durability.py
            "files_redis",  # tests/test_redis_files.py
            "configured_redis",  # tests/test_redis_safety.py
            "group",  # a primary, a replica and Sentinels (tests/test_sentinel.py)
            "clickhouse_http",  # the ClickHouse HTTP fixture (tests/clickhouse_http.py)
            "hostile",  # hitstream processes shared by a module (tests/test_hostile_http.py)
            "start_up",  # hitstream up (tests/test_up.py, tests/test_up_geoip.py)
            "start_up_at_the_default_redis_address",
            "replays",  # hitstream replay processes (tests/test_lanes_processes.py)
            "lazyfs",  # LazyFS mounts for power cuts (tests/lazyfs.py)
            "commands",  # any other command, or a chdb store read in a child process
        }
    ),
}


def tier_of(fixturenames: list[str]) -> str:
    """The tier of a test that requests ``fixturenames`` (with everything they request)."""
    used = set(fixturenames)
    return next((tier for tier in reversed(TIERS) if TIER_FIXTURES.get(tier, frozenset()) & used), UNIT)


class ProcessStarted(Exception):
    """A test outside the processes tier started a process."""


_shared_server_starting = False


@contextmanager
def shared_server() -> Iterator[None]:
    """The one process any tier may start: the suite's shared Redis server (``redis_server``)."""
    global _shared_server_starting
    _shared_server_starting = True
    try:
        yield
    finally:
        _shared_server_starting = False


@contextmanager
def processes_only_in_their_tier(item: pytest.Item) -> Iterator[None]:
    """While ``item``'s setup or call runs, outside the processes tier: starting a child
    process fails, naming the fix."""
    tier = tier_of(item.fixturenames)
    if tier == PROCESSES:
        yield
        return

    def refuse(what: str) -> None:
        if not _shared_server_starting:
            raise ProcessStarted(
                f"{item.nodeid} is in the {tier!r} tier (from its fixtures) but started a process: {what}. "
                "Start it through a fixture of the processes tier (tests/tiers.py, TIER_FIXTURES), "
                "for instance request `commands` (tests/conftest.py), or add the fixture that starts it there."
            )

    execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    start = multiprocessing.process.BaseProcess.start

    def guarded_execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        refuse(f"subprocess {args!r}"[:300])
        execute_child(self, args, *rest, **kwargs)

    def guarded_start(self: multiprocessing.process.BaseProcess) -> None:
        refuse(f"multiprocessing {self.name}")
        start(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", guarded_execute_child)
        patch.setattr(multiprocessing.process.BaseProcess, "start", guarded_start)
        yield
