"""Who may send what: the presented token, the site of a host and the token's grant on it.

Lookups use the control plane's own functions (shared.control) on a synchronous Redis
client in a worker thread, and are cached in this process for ``control_cache_seconds``,
so a revocation, expiry or grant change applies in every API process within that time.
Concurrent misses for one key share one lookup. Every lookup is bounded by the Redis
timeout; a failure raises ``Unavailable`` (503), never a guess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest_api.handoff import Unavailable
from shared import keys
from shared.control.changes import now_iso
from shared.control.grants import Permission, can, role_on_site
from shared.control.sites import Site, site_for_domain
from shared.control.tokens import ApiToken, hash_token

T = TypeVar("T")

# Bounds memory when clients send many unknown tokens or hosts: past it the cache restarts.
MAX_CACHED_ENTRIES = 10_000
LAST_USED_INTERVAL_SECONDS = 60.0


def presented_secret(headers: Mapping[str, str]) -> str | None:
    """The token from ``Authorization: Bearer`` (any case; wins) or ``X-Api-Key``."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key", "").strip() or None


class _TtlCache:
    def __init__(self, ttl_seconds: float, timeout_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._entries: dict[str, tuple[float, asyncio.Future[object]]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now and entry[1].done() and not entry[1].cancelled():
            if entry[1].exception() is None:  # the common case: answered from memory, no await
                return entry[1].result()  # type: ignore[return-value]
        if entry is None or entry[0] <= now:
            if len(self._entries) >= MAX_CACHED_ENTRIES:
                self._entries.clear()
            lookup = asyncio.ensure_future(load())
            # Callers that timed out stop waiting; the failure must still count as retrieved.
            lookup.add_done_callback(lambda done: done.cancelled() or done.exception())
            entry = (now + self._ttl, lookup)
            self._entries[key] = entry
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(entry[1])  # type: ignore[return-value]
        except (TimeoutError, redis.RedisError, OSError):
            if self._entries.get(key) is entry:
                del self._entries[key]  # never cache a failure
            raise Unavailable("control-plane lookup failed") from None


class Access:
    """Cached answers to: which token is this, which site is this host, may it write there."""

    def __init__(self, redis_url: str, cache_seconds: float, timeout_ms: int) -> None:
        timeout = timeout_ms / 1000
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._tokens = _TtlCache(cache_seconds, timeout)
        self._sites = _TtlCache(cache_seconds, timeout)
        self._grants = _TtlCache(cache_seconds, timeout)
        self._last_used_written: dict[str, float] = {}

    def close(self) -> None:
        self._redis.close()

    async def usable_token(self, secret: str) -> ApiToken | None:
        """The token for a secret if it exists and is neither revoked nor expired."""
        token_hash = hash_token(secret)
        token = await self._tokens.get(token_hash, lambda: self._in_thread(self._read_token, token_hash))
        if token is None or not token.is_usable(datetime.now(UTC)):
            return None
        self._note_use(token_hash)
        return token

    async def site(self, host: str) -> Site | None:
        return await self._sites.get(host, lambda: self._in_thread(self._read_site, host))

    async def may_manage_data(self, token: ApiToken, site: Site) -> bool:
        return await self._grants.get(
            f"{token.id} {site.id}", lambda: self._in_thread(self._read_permission, token.id, site.id)
        )

    async def _in_thread(self, read: Callable[..., T], *args: str) -> T:
        return await asyncio.to_thread(read, *args)

    def _read_token(self, token_hash: str) -> ApiToken | None:
        values = self._redis.hgetall(keys.TOKEN.format(token_hash=token_hash))
        return ApiToken.from_hash(values) if values else None

    def _read_site(self, host: str) -> Site | None:
        try:
            return site_for_domain(self._redis, host)
        except ValueError:  # not a valid domain, so no site can have it
            return None

    def _read_permission(self, token_id: str, site_id: str) -> bool:
        return can(role_on_site(self._redis, token_id, site_id), Permission.SITE_MANAGE_DATA)

    def _note_use(self, token_hash: str) -> None:
        """Record last_used_at at most once a minute per token, without delaying the request."""
        now = time.monotonic()
        if (
            now - self._last_used_written.get(token_hash, -LAST_USED_INTERVAL_SECONDS)
            < LAST_USED_INTERVAL_SECONDS
        ):
            return
        if len(self._last_used_written) >= MAX_CACHED_ENTRIES:
            self._last_used_written.clear()
        self._last_used_written[token_hash] = now
        asyncio.get_running_loop().run_in_executor(None, self._write_last_used, token_hash)

    def _write_last_used(self, token_hash: str) -> None:
        key = keys.TOKEN.format(token_hash=token_hash)
        try:
            # Only an existing token: HSET alone would re-create a deleted one as a husk.
            if self._redis.exists(key):
                self._redis.hset(key, "last_used_at", now_iso())
        except (redis.RedisError, OSError):
            pass  # bookkeeping only; the next minute tries again
