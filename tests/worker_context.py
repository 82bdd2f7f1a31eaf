"""A worker context (workers.runtime.context) for tests: real Redis and batch queue, a given store and
pipeline (stand-ins welcome), delivered in this process."""

from __future__ import annotations

import threading
from typing import Any

import redis

from shared.config import Settings
from workers.batch.delivery import StoreAndAcknowledge
from workers.batch.loop import Overlaps
from workers.batch.queue import BatchQueue
from workers.runtime.context import ExclusionsWatch, WorkerContext
from workers.store.opening import StoreOpening


def worker_context_for(
    client: redis.Redis, store: Any, pipeline: Any = None, settings: Settings | None = None
) -> WorkerContext:
    settings = settings or Settings()
    queue = BatchQueue(client, settings.claim_timeout_seconds, settings.bulk_min_share)
    opening = StoreOpening(lambda: store)
    shutdown = threading.Event()
    storing = StoreAndAcknowledge(client, queue, opening, shutdown)
    return WorkerContext(
        settings=settings,
        redis=client,
        batch_queue=queue,
        exclusions=ExclusionsWatch(lambda: pipeline, client),
        store=opening,
        storing=storing,
        delivery=storing,
        overlaps=Overlaps(),
        shutdown_requested=shutdown,
    )
