"""The control-plane version as the worker reads it (``keys.CONTROL_VERSION``), for tests
that check every control-plane change moves it."""

from __future__ import annotations

from redis import Redis

from shared import keys


def control_version(redis: Redis) -> int:
    """The current control-plane version; 0 before the first change."""
    return int(redis.get(keys.CONTROL_VERSION) or 0)
