"""API tokens: bearer secrets for the ingest API, stored only as SHA-256 hashes.

A secret is 64 random hex characters, shown once at creation. Redis holds
``keys.TOKEN`` (keyed by the secret's SHA-256 hex) with the token's fields, and
``keys.TOKEN_HASH_BY_ID`` to find that hash again from the id the operator sees.

The API authenticates by hashing the presented secret and reading ``keys.TOKEN`` for that
hash: an O(1) key lookup, never a comparison of the secret against stored values, so the
time taken reveals nothing about how close a guess was (no timing attack), and a Redis dump
never yields a usable secret.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.control.changes import (
    ControlError,
    HashFields,
    bump_version,
    now_iso,
    read_hashes,
    text,
    text_hash,
    transaction_value,
)


def hash_token(secret: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_key(secret: str) -> str:
    """The Redis key holding the token for a presented secret (exists only if it is known)."""
    return keys.TOKEN.format(token_hash=hash_token(secret))


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str  # UUID, shown to operators; never the secret
    name: str
    created_at: str  # ISO 8601, UTC, like every time below
    last_used_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    bulk: bool = False  # a bulk token's pageviews go to the bulk lane (shared.lanes), always

    def to_hash(self) -> HashFields:
        """Redis hash fields; a missing time is stored as ""."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at or "",
            "expires_at": self.expires_at or "",
            "revoked_at": self.revoked_at or "",
            "bulk": "1" if self.bulk else "",
        }

    @classmethod
    def from_hash(cls, values: Mapping[bytes | str, bytes | str]) -> ApiToken:
        fields = text_hash(values)
        return cls(
            id=fields["id"],
            name=fields["name"],
            created_at=fields["created_at"],
            last_used_at=fields.get("last_used_at") or None,
            expires_at=fields.get("expires_at") or None,
            revoked_at=fields.get("revoked_at") or None,
            bulk=fields.get("bulk") == "1",
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(self.expires_at) <= now

    def is_usable(self, now: datetime) -> bool:
        """Whether the API accepts this token at ``now`` (an aware datetime)."""
        return self.revoked_at is None and not self.is_expired(now)


# A century: any longer and the expiry date would soon pass what a datetime holds (year 9999).
MAX_EXPIRES_IN_DAYS = 36_500


def create_token(
    redis: Redis, name: str, expires_in_days: int | None = None, bulk: bool = False
) -> tuple[str, ApiToken]:
    """Create a token (a bulk one for replays: ``bulk``); returns the secret (its only
    appearance) and the stored token."""
    if not name.strip():
        raise ControlError("token name must not be empty")
    if expires_in_days is not None and not 0 < expires_in_days <= MAX_EXPIRES_IN_DAYS:
        raise ControlError(f"expires_in_days must be 1 to {MAX_EXPIRES_IN_DAYS} days")
    created = datetime.now(UTC)
    expires = created + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken(
        id=str(uuid.uuid4()),
        name=name.strip(),
        created_at=created.isoformat(timespec="milliseconds"),
        expires_at=expires.isoformat(timespec="milliseconds") if expires else None,
        bulk=bulk,
    )
    secret = secrets.token_hex(32)
    token_hash = hash_token(secret)
    with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.TOKEN.format(token_hash=token_hash), mapping=token.to_hash())
        pipe.hset(keys.TOKEN_HASH_BY_ID, token.id, token_hash)
        bump_version(pipe)
        pipe.execute()
    return secret, token


def list_tokens(redis: Redis) -> list[ApiToken]:
    """Every token (revoked and expired ones too), sorted by creation time."""
    token_keys = [keys.TOKEN.format(token_hash=text(token_hash)) for token_hash in redis.hvals(keys.TOKEN_HASH_BY_ID)]
    tokens = [ApiToken.from_hash(values) for values in read_hashes(redis, token_keys)]
    return sorted(tokens, key=lambda token: (token.created_at, token.id))


def revoke_token(redis: Redis, token_id: str) -> ApiToken:
    """Mark a token revoked (kept for the record); ControlError for an unknown id.

    Revoking an already revoked token changes nothing and returns it as it is.
    """

    def write(pipe: Pipeline) -> ApiToken:
        token_hash = pipe.hget(keys.TOKEN_HASH_BY_ID, token_id)
        if token_hash is None:
            raise ControlError(f"no token with id {token_id!r}")
        key = keys.TOKEN.format(token_hash=text(token_hash))
        pipe.watch(key)
        token = ApiToken.from_hash(pipe.hgetall(key))
        if token.revoked_at is not None:
            return token
        revoked = replace(token, revoked_at=now_iso())
        pipe.multi()
        pipe.hset(key, "revoked_at", revoked.to_hash()["revoked_at"])
        bump_version(pipe)
        return revoked

    return transaction_value(redis, write, keys.TOKEN_HASH_BY_ID)
