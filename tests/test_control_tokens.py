"""API tokens: secrets shown once and stored only as SHA-256, expiry, revocation."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from shared import keys
from shared.control.changes import ControlError
from shared.control.tokens import (
    ApiToken,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    token_key,
)
from tests.control_version import control_version


def _everything_stored(redis: fakeredis.FakeRedis) -> bytes:
    """Every key, hash field and value in Redis, concatenated, to search for leaked secrets."""
    parts: list[bytes] = []
    for key in redis.scan_iter():
        parts.append(key)
        kind = redis.type(key)
        if kind == b"hash":
            for field, value in redis.hgetall(key).items():
                parts += [field, value]
        elif kind == b"string":
            parts.append(redis.get(key))
    return b"\n".join(parts)


def test_secret_is_64_hex_chars_and_never_stored_in_clear(fake_redis: fakeredis.FakeRedis) -> None:
    secret, token = create_token(fake_redis, "backend")

    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert secret.encode() not in _everything_stored(fake_redis)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert hash_token(secret) == digest
    assert fake_redis.hget(keys.TOKEN_HASH_BY_ID, token.id) == digest.encode()
    assert ApiToken.from_hash(fake_redis.hgetall(keys.TOKEN.format(token_hash=digest))) == token


def test_each_token_gets_its_own_secret(fake_redis: fakeredis.FakeRedis) -> None:
    first, _ = create_token(fake_redis, "a")
    second, _ = create_token(fake_redis, "b")
    assert first != second


def test_unknown_secret_has_no_token(fake_redis: fakeredis.FakeRedis) -> None:
    create_token(fake_redis, "backend")
    assert fake_redis.hgetall(token_key("0" * 64)) == {}


def test_token_without_expiry_is_usable_until_revoked(fake_redis: fakeredis.FakeRedis) -> None:
    secret, token = create_token(fake_redis, "backend")
    far_future = datetime.now(UTC) + timedelta(days=3650)
    assert token.expires_at is None
    assert token.is_usable(far_future)

    revoked = revoke_token(fake_redis, token.id)

    stored = ApiToken.from_hash(fake_redis.hgetall(token_key(secret)))
    assert stored == revoked
    assert stored.revoked_at is not None
    assert not stored.is_usable(datetime.now(UTC))


def test_token_expires_after_the_given_days(fake_redis: fakeredis.FakeRedis) -> None:
    secret, token = create_token(fake_redis, "backend", expires_in_days=7)
    stored = ApiToken.from_hash(fake_redis.hgetall(token_key(secret)))
    created = datetime.fromisoformat(stored.created_at)

    assert stored.expires_at is not None
    assert datetime.fromisoformat(stored.expires_at) == created + timedelta(days=7)
    assert stored.is_usable(created + timedelta(days=6, hours=23))
    assert not stored.is_usable(created + timedelta(days=7))


@pytest.mark.parametrize(("name", "days", "message"), [("  ", None, "name"), ("x", 0, "days")])
def test_create_token_rejects_bad_input(
    fake_redis: fakeredis.FakeRedis, name: str, days: int | None, message: str
) -> None:
    with pytest.raises(ControlError, match=message):
        create_token(fake_redis, name, days)
    assert list_tokens(fake_redis) == []


def test_revoking_twice_keeps_the_first_revocation(fake_redis: fakeredis.FakeRedis) -> None:
    _, token = create_token(fake_redis, "backend")
    first = revoke_token(fake_redis, token.id)
    version = control_version(fake_redis)

    assert revoke_token(fake_redis, token.id) == first
    assert control_version(fake_redis) == version


def test_revoking_an_unknown_token_fails(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ControlError, match="no token with id 'nope'"):
        revoke_token(fake_redis, "nope")


def test_list_tokens_shows_every_token_oldest_first(fake_redis: fakeredis.FakeRedis) -> None:
    _, first = create_token(fake_redis, "first")
    _, second = create_token(fake_redis, "second")
    revoked = revoke_token(fake_redis, first.id)

    listed = list_tokens(fake_redis)

    assert set(listed) == {revoked, second}
    assert [token.created_at for token in listed] == sorted(token.created_at for token in listed)


def test_from_hash_reads_decoded_replies_too() -> None:
    values = {
        "id": "t1",
        "name": "n",
        "created_at": "2026-01-01T00:00:00+00:00",
        "last_used_at": "",
        "expires_at": "",
        "revoked_at": "",
        "bulk": "",
    }
    token = ApiToken.from_hash(values)
    assert token == ApiToken(id="t1", name="n", created_at="2026-01-01T00:00:00+00:00")
    assert token.to_hash() == values
