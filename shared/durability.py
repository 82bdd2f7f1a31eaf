"""What a 202 promises: the durability modes, and whether a Redis can give them.

``HITSTREAM_DURABILITY`` names the mode (docs/reliability.md has what each survives):

- ``fsync`` (the default): the pageview is in Redis's AOF, fsynced, before the 202. Redis
  must run ``appendonly yes`` with ``appendfsync always``: it then writes and fsyncs the AOF
  before it sends any reply of the same event-loop round, so the script call's reply is the
  proof (one fsync covers every request of that round: group commit).
- ``replicated``: as ``fsync``, and at least ``HITSTREAM_MIN_REPLICAS`` replicas acknowledged
  the write (``WAIT``) before the 202, so it survives a failover to one of them.
- ``relaxed``: the 202 comes once the write is in Redis's memory (``appendfsync everysec``
  loses up to the last second or two on a power cut).

Redis says what it does with ``CONFIG GET append*`` (one pattern: Redis 6 takes only one).
Whoever answers 202 checks it at start and after every reconnect (ingest_api.redis_wire).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import redis

DURABILITY_VARIABLE = "HITSTREAM_DURABILITY"
# CONFIG GET's pattern: appendonly and appendfsync (and the AOF's file names) in one command.
CONFIG_PATTERN = "append*"


class Durability(enum.StrEnum):
    FSYNC = "fsync"
    REPLICATED = "replicated"
    RELAXED = "relaxed"

    @property
    def needs_fsync(self) -> bool:
        return self is not Durability.RELAXED


class NotDurable(ConnectionError):
    """Redis cannot give what the durability mode promises; the message names the setting.

    A ConnectionError, so every caller that already answers 503 for an unreachable Redis
    answers 503 for this too."""


def config_pairs(reply: list[bytes | str] | Mapping[Any, Any]) -> dict[str, str]:
    """CONFIG GET's reply as a dict: a flat [name, value, ...] list (RESP2) or a mapping."""
    if isinstance(reply, Mapping):
        return {_text(name): _text(value) for name, value in reply.items()}
    texts = [_text(item) for item in reply]
    return dict(zip(texts[::2], texts[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def refusal(mode: Durability, config: Mapping[str, str] | None) -> str | None:
    """Why a Redis with this ``CONFIG GET append*`` cannot give ``mode`` (None: it can).

    ``config`` None means Redis refused CONFIG (managed services often disable it): what
    cannot be checked cannot be promised."""
    if not mode.needs_fsync:
        return None
    advice = f"set appendonly yes and appendfsync always on Redis, or {DURABILITY_VARIABLE}=relaxed"
    if config is None:
        return f"{DURABILITY_VARIABLE}={mode}: Redis refused CONFIG GET, so its appendfsync cannot be checked; {advice}"
    appendonly, appendfsync = config.get("appendonly"), config.get("appendfsync")
    if appendonly != "yes":
        return f"{DURABILITY_VARIABLE}={mode} needs Redis appendonly yes, and it is {appendonly!r}; {advice}"
    if appendfsync != "always":
        return f"{DURABILITY_VARIABLE}={mode} needs Redis appendfsync always, and it is {appendfsync!r}; {advice}"
    return None


def durability_config(client: redis.Redis) -> dict[str, str] | None:
    """``CONFIG GET append*`` through a redis-py client; None when Redis refuses CONFIG.

    Connection errors propagate: the caller reports an unreachable Redis its own way."""
    try:
        return config_pairs(client.config_get(CONFIG_PATTERN))
    except redis.ResponseError:
        return None
