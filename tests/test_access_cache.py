"""The API's control-plane cache: a key in use is refreshed before its answer expires, so a
steady client never waits for a lookup, and no answer outlives its time to live."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from ingest_api import access
from ingest_api.access import _TtlCache
from ingest_api.handoff import Unavailable

TTL = 0.4


class Clock:
    """The cache's clock, moved by the test: a loaded machine cannot make a step late."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(access, "time", clock)
    return clock


def answered_at_once(lookup: Coroutine[Any, Any, str]) -> str:
    """The cache's answer if it came without awaiting anything (from memory)."""
    try:
        lookup.send(None)
    except StopIteration as answered:
        return str(answered.value)
    lookup.close()
    raise AssertionError("the cache waited for a lookup")


def test_a_key_in_use_is_looked_up_again_before_its_answer_expires_and_never_waited_for(clock: Clock) -> None:
    answers = iter(["first", "second", "third"])
    reads: list[str] = []

    async def read(key: str) -> str:
        reads.append(key)
        await asyncio.sleep(0.05)  # a lookup takes a while: whoever waits for it, waits this long
        return next(answers)

    async def scenario() -> list[str]:
        cache = _TtlCache(TTL, timeout_seconds=1.0)
        seen = [await cache.get("k", read, "k")]  # a miss: waits for the lookup
        clock.now += TTL * 0.5
        seen.append(answered_at_once(cache.get("k", read, "k")))  # fresh: no lookup
        clock.now += TTL * 0.35  # in the last quarter of the first answer's life
        seen.append(answered_at_once(cache.get("k", read, "k")))  # the old answer, a lookup behind it
        while answered_at_once(cache.get("k", read, "k")) == "first":  # until the refresh is kept
            await asyncio.sleep(0.01)
        clock.now += TTL * 0.3  # past the first answer's expiry
        seen.append(answered_at_once(cache.get("k", read, "k")))
        return seen

    assert asyncio.run(scenario()) == ["first", "first", "first", "second"]
    assert reads == ["k", "k"]


def test_an_answer_is_not_served_past_its_time_to_live_when_the_key_went_unused(clock: Clock) -> None:
    answers = iter(["before", "after"])

    async def read(key: str) -> str:
        return next(answers)

    async def scenario() -> list[str]:
        cache = _TtlCache(TTL, timeout_seconds=1.0)
        first = await cache.get("k", read, "k")
        clock.now += TTL * 1.1
        return [first, await cache.get("k", read, "k")]

    assert asyncio.run(scenario()) == ["before", "after"]


def test_a_failed_background_lookup_keeps_nothing_and_the_next_miss_reports_it(clock: Clock) -> None:
    failing = threading.Event()
    failed: list[str] = []

    async def read(key: str) -> str:
        if failing.is_set():
            failed.append(key)
            raise OSError("Redis went away")
        return "answer"

    async def scenario() -> str:
        cache = _TtlCache(TTL, timeout_seconds=0.5)
        await cache.get("k", read, "k")
        failing.set()
        clock.now += TTL * 0.85
        served = await cache.get("k", read, "k")  # still fresh; its refresh fails in the background
        while not failed:  # until the refresh has failed
            await asyncio.sleep(0.01)
        clock.now += TTL * 0.3
        with pytest.raises(Unavailable):
            await cache.get("k", read, "k")
        return served

    assert asyncio.run(scenario()) == "answer"
