"""Per-process singletons of a worker: settings, Redis, batch queue, pipeline, store, and
the claimer and store-writer threads.

An RQ SimpleWorker runs every job in its own process, so whatever is built here once (the
ClickHouse client, GeoIP readers, the user-agent cache) stays warm across jobs. Everything
is built lazily, on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import redis

from shared import keys
from shared import redis_client as clients
from shared.config import Settings, load_settings
from workers.queue import BatchQueue

if TYPE_CHECKING:
    from workers.pipeline import Pipeline
    from workers.store.store import Store

# Workers must see control-plane changes within 5 s; checking the version costs one GET.
EXCLUSIONS_CHECK_SECONDS = 1.0

# Set by a warm shutdown (SIGINT/SIGTERM): a job waiting on the store releases its batch.
shutdown_requested = threading.Event()


@functools.cache
def settings() -> Settings:
    return load_settings()


@functools.cache
def redis_client() -> redis.Redis:
    return clients.redis_client(settings().redis_url, patient=True)


@functools.cache
def batch_queue() -> BatchQueue:
    return BatchQueue(redis_client(), settings().claim_timeout_seconds, settings().bulk_min_share)


@functools.cache
def _opened_store() -> Store:
    from workers.store.store import open_store

    return open_store(settings().clickhouse_url)


@functools.cache
def batch_claimer() -> ThreadPoolExecutor:
    """The thread that claims the next batch while a job processes the current one."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="hitstream-claimer")


@functools.cache
def store_writer() -> ThreadPoolExecutor:
    """The thread that runs inserts while a job processes the next batch (ClickHouse works
    without the GIL). One thread: a process has at most one insert running."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="hitstream-store-writer")


_store_migrated = False


def current_store() -> Store:
    """The store, opened and migrated on first use (migrations are idempotent, so every
    worker process brings the schema up to date). Raises StoreUnavailable until it can be
    opened; the next call tries again."""
    global _store_migrated
    store = _opened_store()
    if not _store_migrated:
        store.migrate()
        _store_migrated = True
    return store


class _ExclusionsWatch:
    """Reload the pipeline's exclusion rules when the control-plane version changes."""

    def __init__(self) -> None:
        self.loaded = False
        self.version: bytes | None = None
        self.checked_at = float("-inf")

    def refresh(self, pipeline: Pipeline, client: redis.Redis) -> None:
        now = time.monotonic()
        if now - self.checked_at < EXCLUSIONS_CHECK_SECONDS:
            return
        self.checked_at = now
        version = client.get(keys.CONTROL_VERSION)
        if self.loaded and version == self.version:
            return
        from shared.control.exclusions import list_exclusions

        pipeline.update_exclusions(list_exclusions(client))
        self.version = version
        self.loaded = True


_exclusions = _ExclusionsWatch()


@functools.cache
def _built_pipeline() -> Pipeline:
    from workers.pipeline import build_pipeline

    return build_pipeline(settings())


def pipeline() -> Pipeline:
    """The pipeline, with exclusion rules at most EXCLUSIONS_CHECK_SECONDS stale."""
    built = _built_pipeline()
    _exclusions.refresh(built, redis_client())
    return built
