"""Endpoints for operators and orchestrators: liveness, readiness, metrics, API description."""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ingest_api.metrics import CONTENT_TYPE, Metrics
from ingest_api.openapi import DOCUMENT
from shared import keys
from shared.queue_stats import BACKLOG_KEYS, BACKLOG_SCRIPT, parse_backlog

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
            return PlainTextResponse("redis does not answer", status_code=503)
        return PlainTextResponse("ready")

    async def metrics(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._redis.eval(BACKLOG_SCRIPT, len(BACKLOG_KEYS), *BACKLOG_KEYS, keys.GROUP)
            self._metrics.backlog = parse_backlog(reply)
        except (TimeoutError, RedisError, OSError):
            self._metrics.backlog = None
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return Response(_OPENAPI_JSON, media_type="application/json")
