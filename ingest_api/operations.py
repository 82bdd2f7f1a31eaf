"""Endpoints for operators and orchestrators: liveness, readiness, metrics, API description."""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ingest_api import errors
from ingest_api.answer import JSON_MEDIA_TYPE
from ingest_api.errors import error_body
from ingest_api.metrics import CONTENT_TYPE, Metrics
from ingest_api.openapi import DOCUMENT
from shared import keys
from shared.backlog import BACKLOG_KEYS, BACKLOG_SCRIPT, parse_backlog
from shared.redis_safety import RedisSafety, safety_from_info

_OPENAPI_JSON = orjson.dumps(DOCUMENT)


class Operations:
    def __init__(self, redis: Redis, metrics: Metrics, timeout_ms: int) -> None:
        self._redis = redis
        self._metrics = metrics
        self._timeout = timeout_ms / 1000

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
        except (TimeoutError, RedisError, OSError):
            return Response(error_body(errors.REDIS_NOT_READY), 503, media_type=JSON_MEDIA_TYPE)
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
