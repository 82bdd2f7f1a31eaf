"""The API's control-plane cache: a key in use is refreshed before its answer expires, so a
steady client never waits for a lookup, and no answer outlives its time to live."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ingest_api.access import _TtlCache
from ingest_api.handoff import Unavailable

TTL = 0.4


def test_a_key_in_use_is_looked_up_again_before_its_answer_expires_and_never_waited_for() -> None:
    answers = iter(["first", "second", "third"])
    reads: list[str] = []

    async def read(key: str) -> str:
        reads.append(key)
        await asyncio.sleep(0.05)  # a lookup takes a while: whoever waits for it, waits this long
        return next(answers)

    async def scenario() -> list[str]:
        cache = _TtlCache(TTL, timeout_seconds=1.0)
        seen = [await cache.get("k", read, "k")]  # a miss: waits for the lookup
        await asyncio.sleep(TTL * 0.5)
        seen.append(await cache.get("k", read, "k"))  # fresh: no lookup
        await asyncio.sleep(TTL * 0.35)  # in the last quarter of the first answer's life
        seen.append(await cache.get("k", read, "k"))  # the old answer, and a lookup behind it
        await asyncio.sleep(TTL * 0.3)  # past the first answer's expiry; the refresh is done
        started = time.monotonic()
        seen.append(await cache.get("k", read, "k"))
        assert time.monotonic() - started < 0.01, "answered from memory, not after a lookup"
        return seen

    assert asyncio.run(scenario()) == ["first", "first", "first", "second"]
    assert reads == ["k", "k"]


def test_an_answer_is_not_served_past_its_time_to_live_when_the_key_went_unused() -> None:
    answers = iter(["before", "after"])

    async def read(key: str) -> str:
        return next(answers)

    async def scenario() -> list[str]:
        cache = _TtlCache(TTL, timeout_seconds=1.0)
        first = await cache.get("k", read, "k")
        await asyncio.sleep(TTL * 1.1)
        return [first, await cache.get("k", read, "k")]

    assert asyncio.run(scenario()) == ["before", "after"]


def test_a_failed_background_lookup_keeps_nothing_and_the_next_miss_reports_it() -> None:
    failing = threading.Event()

    async def read(key: str) -> str:
        if failing.is_set():
            raise OSError("Redis went away")
        return "answer"

    async def scenario() -> str:
        cache = _TtlCache(TTL, timeout_seconds=0.5)
        await cache.get("k", read, "k")
        failing.set()
        await asyncio.sleep(TTL * 0.85)
        served = await cache.get("k", read, "k")  # still fresh; its refresh fails in the background
        await asyncio.sleep(TTL * 0.3)
        with pytest.raises(Unavailable):
            await cache.get("k", read, "k")
        return served

    assert asyncio.run(scenario()) == "answer"
