"""Refuse a Redis that would silently lose hitstream's data; warn about one that keeps no AOF.

Every process (API, worker, the CLI commands that write the queue or control plane) checks
its Redis at start-up:

- an evicting ``maxmemory-policy`` (``allkeys-*``, ``volatile-*``) deletes keys when memory
  runs out: tokens and sites (valid tokens then get 401), idempotency keys (retries stored
  twice), queued pageviews. Start-up is refused with one line naming the setting, unless
  ``HITSTREAM_ALLOW_UNSAFE_REDIS=1``.
- without AOF (``appendonly no``) a Redis restart loses every queued pageview: a warning at
  start-up, and ``hitstream queue`` and ``/metrics`` show it.

The settings are read with INFO (``memory``, ``persistence``), which managed Redis services
allow where they often disable CONFIG. When Redis does not say, the process warns and goes on.
INFO memory also gives ``maxmemory``, from which the lanes' caps are derived when unset
(shared.queue_caps).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared.config import Settings

log = logging.getLogger(__name__)

EVICTING_POLICY_PREFIXES = ("allkeys-", "volatile-")
OPT_OUT_VARIABLE = "HITSTREAM_ALLOW_UNSAFE_REDIS"


class UnsafeRedis(RuntimeError):
    """Redis is configured to delete keys hitstream relies on; the message is one line."""


@dataclass(frozen=True, slots=True)
class RedisSafety:
    """What Redis said about the settings hitstream's guarantees rest on (None: not said)."""

    maxmemory_policy: str | None
    aof_enabled: bool | None
    maxmemory: int | None = None  # bytes; 0: no limit

    @property
    def evicts(self) -> bool:
        return (self.maxmemory_policy or "").startswith(EVICTING_POLICY_PREFIXES)

    def refusal(self) -> str | None:
        """The one-line reason to refuse start-up, or None."""
        if not self.evicts:
            return None
        return (
            f"Redis maxmemory-policy is {self.maxmemory_policy}: Redis would evict tokens, sites, "
            "idempotency keys and queued pageviews when memory runs out; set maxmemory-policy "
            f"noeviction (or {OPT_OUT_VARIABLE}=1 to run anyway)"
        )

    def warnings(self) -> list[str]:
        """One line per setting that weakens a guarantee without refusing start-up."""
        found = []
        if self.maxmemory_policy is None:
            found.append(
                "Redis did not report its maxmemory-policy (INFO memory): cannot check that it never evicts keys"
            )
        if self.aof_enabled is None:
            found.append("Redis did not report whether AOF is on (INFO persistence): a restart may lose the queue")
        elif not self.aof_enabled:
            found.append(
                "Redis runs without AOF (appendonly no): a Redis restart loses every queued pageview; "
                "set appendonly yes"
            )
        return found


def safety_from_info(memory: Mapping[str, Any], persistence: Mapping[str, Any]) -> RedisSafety:
    """Read the settings from INFO's ``memory`` and ``persistence`` sections (as redis-py
    parses them: numbers as int, text as str)."""
    policy = memory.get("maxmemory_policy")
    aof = persistence.get("aof_enabled")
    maxmemory = memory.get("maxmemory")
    return RedisSafety(
        maxmemory_policy=None if policy is None else str(policy),
        aof_enabled=None if aof is None else bool(int(aof)),
        maxmemory=None if maxmemory is None else int(maxmemory),
    )


def _section(client: redis.Redis, name: str) -> dict[str, Any]:
    try:
        return client.info(name)
    except redis.ResponseError:  # INFO disabled or renamed (some managed services)
        return {}


def inspect_redis(client: redis.Redis) -> RedisSafety:
    return safety_from_info(_section(client, "memory"), _section(client, "persistence"))


def check_redis(client: redis.Redis, settings: Settings) -> RedisSafety:
    """Raise UnsafeRedis on an evicting policy (unless allowed); log each warning once.

    Connection errors propagate: the caller reports an unreachable Redis its own way."""
    safety = inspect_redis(client)
    refusal = safety.refusal()
    if refusal is not None:
        if not settings.allow_unsafe_redis:
            raise UnsafeRedis(refusal)
        log.warning("%s=1: running although %s", OPT_OUT_VARIABLE, refusal)
    for warning in safety.warnings():
        log.warning("%s", warning)
    return safety
