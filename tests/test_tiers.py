"""Test tiers (tests/tiers.py): a test is in the highest tier its fixtures need, marked so
without anyone marking it, and a test outside the processes tier that starts a process fails
at once, saying how to fix it."""

from __future__ import annotations

import multiprocessing
import subprocess
from dataclasses import dataclass, field

import pytest

from tests.tiers import PROCESSES, REDIS, UNIT, ProcessStarted, processes_only_in_their_tier, tier_of


@dataclass
class Item:
    """What the guard reads of a pytest item."""

    nodeid: str
    fixturenames: list[str] = field(default_factory=list)


def test_a_test_is_in_the_highest_tier_its_fixtures_need() -> None:
    assert tier_of(["tmp_path", "fake_redis", "store"]) == UNIT
    assert tier_of(["real_redis", "redis_url", "redis_server"]) == REDIS
    assert tier_of(["processes", "hitstream_env", "redis_url", "redis_server"]) == PROCESSES
    assert tier_of(["tmp_path", "own_redis"]) == PROCESSES


def test_each_test_is_marked_with_its_tier(request: pytest.FixtureRequest, real_redis: object) -> None:
    assert [marker.name for marker in request.node.iter_markers() if marker.name in (UNIT, REDIS, PROCESSES)] == [REDIS]


@pytest.mark.parametrize(
    "start",
    [
        lambda: subprocess.run(["true"], check=True),
        lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    ],
    ids=["subprocess", "multiprocessing"],
)
def test_a_fast_test_that_starts_a_process_fails_saying_how_to_fix_it(start: object) -> None:
    fast = Item("tests/test_example.py::test_fast", ["real_redis", "redis_url", "redis_server"])
    with processes_only_in_their_tier(fast), pytest.raises(ProcessStarted) as refused:  # type: ignore[arg-type]
        start()  # type: ignore[operator]
    assert "tests/test_example.py::test_fast is in the 'redis' tier" in str(refused.value)
    assert "TIER_FIXTURES" in str(refused.value) and "`commands`" in str(refused.value)
