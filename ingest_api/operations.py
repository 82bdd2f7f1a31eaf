"""Endpoints for operators and orchestrators: liveness, readiness, metrics, API description.

Readiness includes durability: an API process whose Redis cannot give the durability mode
(shared.durability) answers every pageview 503, so ``/readyz`` says so, naming the setting,
and orchestrators send traffic elsewhere.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ingest_api import errors
from ingest_api.answer import JSON_MEDIA_TYPE
from ingest_api.errors import error_body
from ingest_api.metrics import CONTENT_TYPE, Metrics
from ingest_api.openapi import DOCUMENT
from shared import keys
from shared.backlog import BACKLOG_KEYS, BACKLOG_SCRIPT, parse_backlog
from shared.durability import CONFIG_PATTERN, Durability, config_pairs, refusal
from shared.redis_safety import RedisSafety, safety_from_info

_OPENAPI_JSON = orjson.dumps(DOCUMENT)

log = logging.getLogger(__name__)


class Operations:
    def __init__(self, redis: Redis, metrics: Metrics, timeout_ms: int, durability: Durability) -> None:
        self._redis = redis
        self._metrics = metrics
        self._timeout = timeout_ms / 1000
        self._durability = durability

    async def durability_refusal(self) -> str | None:
        """Why Redis cannot give the durability mode now, or None. Connection errors propagate."""
        if not self._durability.needs_fsync:
            return None
        try:
            config = config_pairs(await self._redis.config_get(CONFIG_PATTERN))
        except ResponseError:  # CONFIG disabled or renamed (managed services)
            return refusal(self._durability, None)
        return refusal(self._durability, config)

    async def check_durability(self) -> None:
        """At start: one warning line when Redis cannot give the mode (requests will get 503)."""
        try:
            async with asyncio.timeout(self._timeout):
                reason = await self.durability_refusal()
        except (TimeoutError, RedisError, OSError):
            return  # Redis away: the first request reports it
        if reason is not None:
            log.warning("refusing to answer 202: %s", reason)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
                reason = await self.durability_refusal()
        except (TimeoutError, RedisError, OSError):
            return Response(error_body(errors.REDIS_NOT_READY), 503, media_type=JSON_MEDIA_TYPE)
        if reason is not None:
            return Response(error_body(reason), 503, media_type=JSON_MEDIA_TYPE)
        return PlainTextResponse("ready")

    async def metrics(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._redis.eval(BACKLOG_SCRIPT, len(BACKLOG_KEYS), *BACKLOG_KEYS, keys.GROUP)
            self._metrics.backlog = parse_backlog(reply)
        except (TimeoutError, RedisError, OSError):
            self._metrics.backlog = None
        safety = RedisSafety(maxmemory_policy=None, aof_enabled=None)  # unknown unless Redis says
        try:
            async with asyncio.timeout(self._timeout):
                safety = safety_from_info(await self._redis.info("memory"), await self._redis.info("persistence"))
        except (TimeoutError, RedisError, OSError):
            pass  # INFO disabled (managed Redis) or Redis away: both gauges read NaN
        self._metrics.redis_aof_enabled.set(float("nan") if safety.aof_enabled is None else safety.aof_enabled)
        self._metrics.redis_evicting.set(float("nan") if safety.maxmemory_policy is None else safety.evicts)
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return Response(_OPENAPI_JSON, media_type=JSON_MEDIA_TYPE)
