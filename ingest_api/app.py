"""The ingest API application: ``create_app`` builds it (``uvicorn --factory``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from ingest_api.access import Access
from ingest_api.ai_fetch import AI_FETCH_BATCH_PATH, AI_FETCH_PATH
from ingest_api.batch import Batch
from ingest_api.empty_buckets import EmptyBuckets
from ingest_api.front import ERROR_HANDLERS, Endpoint, Front
from ingest_api.handoff import HandOff
from ingest_api.intake import Intake, Layout
from ingest_api.item_rules import AI_FETCH, EVENT, PAGEVIEW, ItemRules
from ingest_api.metrics import Metrics
from ingest_api.one_item import OneItem
from ingest_api.openapi import BATCH_PATH, EVENT_PATH, PAGEVIEW_PATH
from ingest_api.operations import Operations
from ingest_api.redis_wire import RedisWire
from ingest_api.site_in_path import SiteInPath
from shared.collector import tune_collector
from shared.config import Settings, load_settings
from shared.lanes import Lane
from shared.redis_client import async_redis_client, redis_address


def create_app(settings: Settings | None = None) -> Front:
    settings = settings or load_settings()
    logging.getLogger("hitstream").setLevel(settings.log_level)
    timeout = settings.redis_timeout_ms / 1000
    # Bounded, without retries: past the timeout the client must get a 503 now, not after back-off.
    client = async_redis_client(settings.redis_url, timeout)  # lookups, readiness, metrics
    access = Access(client, settings.control_cache_seconds, timeout)
    metrics = Metrics()
    wires = {lane: RedisWire(redis_address(settings.redis_url), timeout, settings.durability) for lane in Lane}
    handoff = HandOff(wires, settings, metrics.handoff_seconds)
    operations = Operations(client, metrics, settings.redis_timeout_ms, settings.durability)
    empty_buckets = EmptyBuckets(settings.rate_limit, settings.rate_burst, verdict_age_seconds=timeout)

    def intake(layout: Layout, rules: ItemRules) -> Intake:
        return Intake(layout, rules, access, handoff, empty_buckets, settings)

    ingest: dict[str, Endpoint] = {
        PAGEVIEW_PATH: intake(OneItem(), PAGEVIEW),
        EVENT_PATH: intake(OneItem(), EVENT),
        BATCH_PATH: intake(Batch(), PAGEVIEW),
        AI_FETCH_PATH: intake(SiteInPath(OneItem()), AI_FETCH),
        AI_FETCH_BATCH_PATH: intake(SiteInPath(Batch()), AI_FETCH),
    }
    routes = [
        Route("/healthz", operations.healthz, methods=["GET"]),
        Route("/readyz", operations.readyz, methods=["GET"]),
        Route("/metrics", operations.metrics, methods=["GET"]),
        Route("/api/openapi.json", operations.openapi, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tune_collector()
        await operations.check_durability()  # logs, at start, a Redis that cannot give the mode
        try:
            yield
        finally:
            await handoff.stop()
            await access.stop()
            await client.aclose()

    operated = Starlette(routes=routes, lifespan=lifespan, exception_handlers=ERROR_HANDLERS)
    return Front(operated, ingest, frozenset(route.path for route in routes), metrics)
