"""The ingest API application: ``create_app`` builds it (``uvicorn --factory``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ingest_api.access import Access
from ingest_api.batch import BatchEndpoint
from ingest_api.events import parse_event
from ingest_api.handoff import HandOff
from ingest_api.intake import Intake
from ingest_api.metrics import Metrics
from ingest_api.observe import Observe
from ingest_api.openapi import BATCH_PATH, EVENT_PATH, PAGEVIEW_PATH
from ingest_api.operations import Operations
from ingest_api.pageview import SingleEndpoint
from ingest_api.validation import parse_pageview
from shared.config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    logging.getLogger("hitstream").setLevel(settings.log_level)
    timeout = settings.redis_timeout_ms / 1000
    # No retries: past the timeout the client must get a 503 now, not after back-off.
    client = redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    access = Access(settings.redis_url, settings.control_cache_seconds, settings.redis_timeout_ms)
    handoff = HandOff(client, settings)
    metrics = Metrics()
    operations = Operations(client, metrics, settings.redis_timeout_ms)
    intake = Intake(access, handoff, metrics, settings.rate_burst, settings.trusted_proxies)
    routes = [
        Route(PAGEVIEW_PATH, SingleEndpoint(intake, parse_pageview).handle, methods=["POST"]),
        Route(EVENT_PATH, SingleEndpoint(intake, parse_event).handle, methods=["POST"]),
        Route(BATCH_PATH, BatchEndpoint(intake).handle, methods=["POST"]),
        Route("/healthz", operations.healthz, methods=["GET"]),
        Route("/readyz", operations.readyz, methods=["GET"]),
        Route("/metrics", operations.metrics, methods=["GET"]),
        Route("/api/openapi.json", operations.openapi, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        handoff.start()
        try:
            yield
        finally:
            await handoff.stop()
            await client.aclose()
            access.close()

    observe = Middleware(Observe, metrics=metrics, routes=frozenset(route.path for route in routes))
    return Starlette(routes=routes, middleware=[observe], lifespan=lifespan)
