"""Who may send what: the presented token, the site of a host and the token's role on it.

Lookups read the control plane's keys (shared.keys; the records' own parsers in
shared.control) on the process's asyncio Redis client, and are cached for ``control_cache_seconds``,
so a revocation, expiry or grant change applies in every API process within that time.
Concurrent misses for one key share one lookup. Every lookup is bounded by the Redis
timeout; a failure raises ``Unavailable`` (503), never a guess.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingest_api.handoff import Unavailable
from shared import keys
from shared.control.changes import now_iso, text
from shared.control.grants import Role
from shared.control.sites import Site
from shared.control.tokens import ApiToken, hash_token
from shared.hosts import normalise_domain

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
    """Answers kept for ``ttl`` seconds from the start of their lookup; concurrent misses of
    one key share one lookup (a task); a failed lookup is never kept.

    A key still in use is looked up again in the background during the last quarter of its
    answer's life, so a steady client is answered from memory throughout and never waits for a
    lookup: under a replay flood the event loop is busy for hundreds of ms at a time, and a
    request waiting for its expired answer's lookup can meet the timeout (503; "control-plane
    lookup failed" was 29 of the 288 refusals of a 200,000-line replay). No answer outlives
    ``ttl`` from the start of its lookup, so a revocation still applies within ``ttl``."""

    def __init__(self, ttl_seconds: float, timeout_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._refresh_after = ttl_seconds * 0.75
        self._timeout = timeout_seconds
        self._answers: dict[str, tuple[float, Any]] = {}  # key -> (expires, answer)
        self._lookups: dict[str, asyncio.Future[Any]] = {}  # key -> lookup in flight

    async def get(self, key: str, read: Callable[..., Coroutine[Any, Any, T]], *args: str) -> T:
        """The cached answer, else ``read(*args)``'s (Unavailable when it fails or is late)."""
        entry = self._answers.get(key)
        if entry is not None:
            left = entry[0] - time.monotonic()
            if left > 0:
                if left < self._ttl - self._refresh_after and key not in self._lookups:
                    self._look_up(key, read, args)  # the next answer, ready before this one expires
                return entry[1]  # the common case: answered from memory
        lookup = self._lookups.get(key) or self._look_up(key, read, args)
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(lookup)
        except (TimeoutError, RedisError, OSError):
            raise Unavailable("control-plane lookup failed") from None

    def _look_up(
        self, key: str, read: Callable[..., Coroutine[Any, Any, Any]], args: tuple[str, ...]
    ) -> asyncio.Future[Any]:
        lookup = self._lookups[key] = asyncio.ensure_future(read(*args))
        lookup.add_done_callback(functools.partial(self._keep, key, time.monotonic() + self._ttl))
        return lookup

    def _keep(self, key: str, expires: float, lookup: asyncio.Future[Any]) -> None:
        del self._lookups[key]
        # exception() also marks a failure as retrieved when every caller gave up waiting.
        if lookup.cancelled() or lookup.exception() is not None:
            return
        if len(self._answers) >= MAX_CACHED_ENTRIES:
            self._answers.clear()
        self._answers[key] = (expires, lookup.result())


class Access:
    """Cached answers to: which token is this, which site is this host, which role does the
    token hold there."""

    def __init__(self, client: Redis, cache_seconds: float, timeout_seconds: float) -> None:
        self._redis = client  # bounded by the Redis timeout (shared.redis_client)
        self._tokens = _TtlCache(cache_seconds, timeout_seconds)
        self._sites = _TtlCache(cache_seconds, timeout_seconds)
        self._last_used_written: dict[str, float] = {}
        self._writing: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Wait for the last_used_at writes in flight (the client closes after this)."""
        await asyncio.gather(*self._writing, return_exceptions=True)

    async def usable_token(self, secret: str) -> ApiToken | None:
        """The token for a secret if it exists and is neither revoked nor expired."""
        token_hash = hash_token(secret)
        token = await self._tokens.get(token_hash, self._read_token, token_hash)
        if token is None or not token.is_usable(datetime.now(UTC)):
            return None
        self._note_use(token_hash)
        return token

    async def site_for(self, token: ApiToken, host: str) -> tuple[Site | None, Role | None]:
        """The host's site (None: no such site) and the token's role on it (None: no grant):
        one cached answer per token and host, so an accepted request does one lookup here."""
        return await self._sites.get(f"{token.id} {host}", self._read_site_for, token.id, host)

    async def site_by_id(self, token: ApiToken, site_id: str) -> tuple[Site | None, Role | None]:
        """The site with this id (None: no such site) and the token's role on it, cached as
        ``site_for``'s answers."""
        return await self._sites.get(f"{token.id} id:{site_id}", self._read_site_by_id, token.id, site_id)

    async def _read_token(self, token_hash: str) -> ApiToken | None:
        values = await self._redis.hgetall(keys.TOKEN.format(token_hash=token_hash))
        return ApiToken.from_hash(values) if values else None

    async def _read_site_for(self, token_id: str, host: str) -> tuple[Site | None, Role | None]:
        """As shared.control's site_for_domain and role_on_site read them, in one round trip."""
        try:
            domain = normalise_domain(host)
        except ValueError:  # not a valid domain, so no site can have it
            return None, None
        site_id = await self._redis.hget(keys.SITE_BY_DOMAIN, domain)
        if site_id is None:
            return None, None
        return await self._read_site_by_id(token_id, text(site_id))

    async def _read_site_by_id(self, token_id: str, site_id: str) -> tuple[Site | None, Role | None]:
        """As shared.control's get_site and role_on_site read them, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.SITE.format(site_id=site_id))
            pipe.hget(keys.GRANTS.format(token_id=token_id), site_id)
            values, role = await pipe.execute()
        if not values:  # no such site (or removed since its domain was read)
            return None, None
        return Site.from_hash(values), None if role is None else Role(text(role))

    def _note_use(self, token_hash: str) -> None:
        """Record last_used_at at most once a minute per token, without delaying the request."""
        now = time.monotonic()
        if now - self._last_used_written.get(token_hash, -LAST_USED_INTERVAL_SECONDS) < LAST_USED_INTERVAL_SECONDS:
            return
        if len(self._last_used_written) >= MAX_CACHED_ENTRIES:
            self._last_used_written.clear()
        self._last_used_written[token_hash] = now
        task = asyncio.ensure_future(self._write_last_used(token_hash))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write_last_used(self, token_hash: str) -> None:
        key = keys.TOKEN.format(token_hash=token_hash)
        try:
            # Only an existing token: HSET alone would re-create a deleted one as a husk.
            if await self._redis.exists(key):
                await self._redis.hset(key, "last_used_at", now_iso())
        except (RedisError, OSError):
            pass  # bookkeeping only; the next minute tries again
