"""The worker context: what one worker process builds once at start-up and passes to its jobs.

A worker process builds ONE ``WorkerContext`` (settings, the Redis client, the batch queue,
the pipeline, the store, how a batch is stored and delivered) and hands it to its RQ worker
(workers.runtime.processes), which passes it to every job as the first argument. The jobs
hand the batch loop (workers.batch) the parts it uses, never the context itself. Nothing here
is a module global: a test builds its own context with stand-in parts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared import keys
from shared import redis_client as clients
from shared.config import Settings
from shared.control.exclusions import list_exclusions
from shared.durability import Durability
from workers.batch.delivery import Delivery, PassToWriter, StoreAndAcknowledge
from workers.batch.loop import Overlaps
from workers.batch.queue import BatchQueue
from workers.pipeline import Pipeline, build_pipeline
from workers.store.opening import StoreOpening
from workers.store.store import open_store

# Workers must see control-plane changes within 5 s; checking the version costs one GET.
EXCLUSIONS_CHECK_SECONDS = 1.0


def redis_client(settings: Settings) -> redis.Redis:
    """The one place a worker process makes its Redis client."""
    return clients.redis_client(settings.redis_url, patience_seconds=settings.worker_redis_patience_seconds)


class ExclusionsWatch:
    """The pipeline, built on first use (a store writer never builds one), whose exclusion
    rules are reloaded when the control-plane version changes."""

    def __init__(self, build: Callable[[], Pipeline], client: redis.Redis) -> None:
        self.build = build
        self.pipeline: Pipeline | None = None
        self.redis = client
        self.loaded = False
        self.version: bytes | str | None = None
        self.checked_at = float("-inf")

    def refreshed(self) -> Pipeline:
        """The pipeline, with exclusion rules at most EXCLUSIONS_CHECK_SECONDS stale."""
        if self.pipeline is None:
            self.pipeline = self.build()
        now = time.monotonic()
        if now - self.checked_at >= EXCLUSIONS_CHECK_SECONDS:
            self.checked_at = now
            version = self.redis.get(keys.CONTROL_VERSION)
            if not self.loaded or version != self.version:
                self.pipeline.update_exclusions(list_exclusions(self.redis))
                self.version = version
                self.loaded = True
        return self.pipeline


@dataclass
class WorkerContext:
    """Everything a worker process's jobs use, built once per process."""

    settings: Settings
    redis: redis.Redis
    batch_queue: BatchQueue
    exclusions: ExclusionsWatch
    store: StoreOpening
    storing: StoreAndAcknowledge  # how this process stores a batch (its own, or, as the store writer, one passed to it)
    delivery: Delivery  # how an enriched batch leaves the loop: ``storing``, or PassToWriter
    overlaps: Overlaps
    # Set by a warm shutdown (SIGINT/SIGTERM): a job waiting on the store gives its batches back.
    shutdown_requested: threading.Event

    @classmethod
    def build(cls, settings: Settings, hand_off: bool = False, overlaps: Overlaps | None = None) -> WorkerContext:
        """The context of a worker process (the pipeline, built on first use, loads GeoIP
        readers, parsers and lists).
        ``hand_off``: an enricher, which passes its enriched batches to the store writer."""
        client = redis_client(settings)
        replicas = (settings.min_replicas, settings.replica_timeout_ms)
        replicated = settings.durability is Durability.REPLICATED
        queue = BatchQueue(
            client, settings.claim_timeout_seconds, settings.bulk_min_share, replicas if replicated else None
        )
        store = StoreOpening(lambda: open_store(settings.clickhouse_url))
        shutdown = threading.Event()
        storing = StoreAndAcknowledge(client, queue, store, shutdown)
        return cls(
            settings=settings,
            redis=client,
            batch_queue=queue,
            exclusions=ExclusionsWatch(lambda: build_pipeline(settings), client),
            store=store,
            storing=storing,
            delivery=PassToWriter(client, shutdown) if hand_off else storing,
            overlaps=overlaps or Overlaps(),
            shutdown_requested=shutdown,
        )

    def pipeline(self) -> Pipeline:
        return self.exclusions.refreshed()
