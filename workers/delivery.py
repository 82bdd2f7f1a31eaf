"""The last stage of a batch: store it, then acknowledge it; or hand it to the store writer.

``StoreAndAcknowledge`` is the single-process path (and every process's, with a ClickHouse
server): insert with retry while the store is unavailable, then acknowledge the batch with
its dead letters in one transaction. ``HandOff`` is an enricher's, when several processes
share one embedded store: one transaction appends the processed batch to the enriched
stream (keys.ENRICHED_STREAM) and drops its lease, so no other enricher re-claims it; the
batch's entries stay pending in their lane until the writer (workers.writer) has stored them
and acknowledges them. A kill before that transaction leaves the lease to expire (the batch
is re-claimed, same id); after it, the batch is in the enriched stream, which the writer
reads through a consumer group, so a killed writer re-reads what it held. Every insert
carries the batch id as its deduplication token, so a batch delivered twice is stored once.

Why a Redis stream for the hand-off (not a pipe to the writer): it survives the death of
either side without any coordination between the processes and is the mechanism the lanes
already rely on; its cost is one round trip of ~0.5 MB per 1,000-row batch. The batch
travels as its Arrow blocks (workers.store.blocks), built by the enricher, so the writer only
inserts and acknowledges.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from shared import keys
from shared.lanes import LANE_KEYS
from workers import dead_letters, metrics
from workers.batches import EnrichedBatch, Processed, refused_letters
from workers.dead_letters import DeadLetter
from workers.queue import Batch, BatchQueue
from workers.store.opening import StoreOpening
from workers.store.store import Refusals, Store, StoreUnavailable

log = logging.getLogger(__name__)

# How long a batch job retries an unavailable store before it gives its batches back.
STORE_RETRY_SECONDS = 180.0
STORE_RETRY_FIRST_DELAY = 0.1
STORE_RETRY_MAX_DELAY = 10.0
# Enriched batches waiting for the writer before enrichers wait too: enough to keep the
# writer busy, few enough that Redis holds at most this many batches of rows twice.
ENRICHED_MAX_WAITING = 8
ENRICHED_FULL_POLL_SECONDS = 0.005


class StoreGaveUp(RuntimeError):
    """The store stayed unavailable past STORE_RETRY_SECONDS; the job's batches were released."""


class ShutdownWhileWaiting(Exception):
    """A warm shutdown interrupted a wait; the job's batches are released."""


class Delivery(Protocol):
    def deliver(self, processed: Processed) -> None:
        """Hand ``processed`` on; once this returns, the batch is no longer the caller's to keep."""


def write_with_retry(
    store: StoreOpening, batch_id: str, write: Callable[[Store], Refusals], shutdown: threading.Event
) -> Refusals:
    """``write`` the batch to the store, with exponential backoff while the store is
    unavailable; return what the store refused. Raises StoreGaveUp after STORE_RETRY_SECONDS,
    ShutdownWhileWaiting when a warm shutdown interrupts the wait."""
    deadline = time.monotonic() + STORE_RETRY_SECONDS
    delay = STORE_RETRY_FIRST_DELAY
    while True:
        try:
            with metrics.timed_insert():
                return write(store.get())
        except StoreUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise StoreGaveUp(f"store unavailable for {STORE_RETRY_SECONDS:.0f} s: {error}") from error
            metrics.store_retried()
            log.warning("batch %s: store unavailable, retrying in %.1f s: %s", batch_id, delay, error)
        if shutdown.wait(delay):
            raise ShutdownWhileWaiting(batch_id)
        delay = min(delay * 2, STORE_RETRY_MAX_DELAY)


def acknowledge(
    client: redis.Redis,
    queue: BatchQueue,
    batch: Batch,
    letters: list[DeadLetter],
    enriched_entry: str | None = None,
) -> None:
    """Acknowledge a stored ``batch`` and record its dead letters, in one transaction (with
    ``enriched_entry``: also that entry of the enriched stream, which held the batch)."""
    with client.pipeline(transaction=True) as pipe:
        dead_letters.record(pipe, letters)
        queue.ack(batch, pipe)
        if enriched_entry is not None:
            pipe.xack(keys.ENRICHED_STREAM, keys.ENRICHED_GROUP, enriched_entry)
            pipe.xdel(keys.ENRICHED_STREAM, enriched_entry)
        pipe.execute()
    if letters:
        log.warning("batch %s: %d envelope(s) sent to dead letters", batch.id, len(letters))


class StoreAndAcknowledge:
    """Deliver by storing the batch in this process, then acknowledging it."""

    def __init__(self, client: redis.Redis, queue: BatchQueue, store: StoreOpening, shutdown: threading.Event) -> None:
        self.redis = client
        self.queue = queue
        self.store = store
        self.shutdown = shutdown

    def deliver(self, processed: Processed) -> None:
        batch = processed.batch
        refusals = write_with_retry(
            self.store,
            batch.id,
            lambda store: store.write_batch(batch.id, processed.rows, processed.drops),
            self.shutdown,
        )
        letters = processed.letters + refused_letters(
            self.redis, batch, processed.row_entries, processed.drop_entries, refusals
        )
        acknowledge(self.redis, self.queue, batch, letters)
        metrics.batch_stored(batch, len(processed.rows) - len(refusals.rows), processed.drops, letters)
        metrics.crawler_hits_stored(metrics.crawler_hit_labels(processed.rows), refusals.rows)


class HandOff:
    """Deliver by appending the batch to the enriched stream for the store writer."""

    def __init__(self, client: redis.Redis, shutdown: threading.Event) -> None:
        self.redis = client
        self.shutdown = shutdown

    def deliver(self, processed: Processed) -> None:
        while self.redis.xlen(keys.ENRICHED_STREAM) >= ENRICHED_MAX_WAITING:
            if self.shutdown.wait(ENRICHED_FULL_POLL_SECONDS):
                raise ShutdownWhileWaiting(processed.batch.id)
        # Pickle, as RQ does for its jobs (only hitstream's own processes write this stream);
        # the rows travel inside as Arrow blocks (workers.store.blocks says what that saves).
        payload = pickle.dumps(EnrichedBatch.of(processed), protocol=pickle.HIGHEST_PROTOCOL)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.ENRICHED_STREAM, {keys.ENRICHED_FIELD: payload})
            pipe.zrem(LANE_KEYS[processed.batch.lane].leases, processed.batch.id)
            pipe.execute()
