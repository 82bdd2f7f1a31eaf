"""How control-plane records change: every write commits together with a version bump.

API processes and workers keep sites, tokens, grants and exclusions in memory for a moment
(HITSTREAM_CONTROL_CACHE_SECONDS) and reload only when ``keys.CONTROL_VERSION`` moved, so
every change INCRs it in the same MULTI/EXEC as the change itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TypeVar, cast

from redis import Redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from shared import keys


class ControlError(ValueError):
    """A control-plane change that cannot be made; the message is meant for the operator."""


def now_iso() -> str:
    """The current UTC time as stored in control-plane records (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# A record as the fields of a Redis hash, typed as redis-py's ``hset(mapping=...)`` takes it
# (its keys are invariant: a ``dict[str, str]`` does not fit).
HashFields = dict[FieldT, EncodableT]
T = TypeVar("T")


def transaction_value(redis: Redis, write: Callable[[Pipeline], T], *watched: str) -> T:
    """``redis.transaction(write, *watched)``: ``write`` runs (again after a WATCH conflict)
    and what it returns is returned. redis-py types the callable as returning nothing and the
    call as returning the replies, so this one place tells the type checker otherwise."""
    return cast(T, redis.transaction(write, *watched, value_from_callable=True))  # type: ignore[arg-type]


def bump_version(pipe: Pipeline) -> None:
    """Queue the version INCR inside the caller's MULTI, so readers see change and bump together."""
    pipe.incr(keys.CONTROL_VERSION)


def text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def text_hash(values: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A Redis hash reply as a ``str -> str`` dict."""
    return {text(field): text(value) for field, value in values.items()}


def read_hashes(redis: Redis, hash_keys: Iterable[str]) -> list[dict[bytes | str, bytes | str]]:
    """The hashes stored at ``hash_keys``, in order, read in one round trip; missing ones are
    left out."""
    with redis.pipeline(transaction=False) as pipe:
        for key in hash_keys:
            pipe.hgetall(key)
        return [values for values in pipe.execute() if values]
