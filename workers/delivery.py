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
either side without any coordination between the processes, it is the mechanism the lanes
already rely on, and its cost is one round trip of a few hundred KB per batch (measured as
"hand-off" in bench/worker_bench.py).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Protocol

import redis

from shared import keys
from shared.lanes import LANE_KEYS
from workers import dead_letters
from workers.batches import Processed, refused_letters
from workers.dead_letters import DeadLetter
from workers.queue import Batch, BatchQueue
from workers.store.opening import StoreOpening
from workers.store.store import Refusals, StoreUnavailable

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


def write_with_retry(store: StoreOpening, processed: Processed, shutdown: threading.Event) -> Refusals:
    """Write with exponential backoff while the store is unavailable; return what the store
    refused. Raises StoreGaveUp after STORE_RETRY_SECONDS, ShutdownWhileWaiting when a warm
    shutdown interrupts the wait."""
    batch_id = processed.batch.id
    deadline = time.monotonic() + STORE_RETRY_SECONDS
    delay = STORE_RETRY_FIRST_DELAY
    while True:
        try:
            return store.get().write_batch(batch_id, processed.rows, processed.drops)
        except StoreUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise StoreGaveUp(f"store unavailable for {STORE_RETRY_SECONDS:.0f} s: {error}") from error
            log.warning("batch %s: store unavailable, retrying in %.1f s: %s", batch_id, delay, error)
        if shutdown.wait(delay):
            raise ShutdownWhileWaiting(batch_id)
        delay = min(delay * 2, STORE_RETRY_MAX_DELAY)


def acknowledge(
    client: redis.Redis,
    queue: BatchQueue,
    batch: Batch,
    letters: list[DeadLetter],
    also: list[tuple[str, str]] | None = None,
) -> None:
    """Acknowledge a stored ``batch`` and record its dead letters, in one transaction; ``also``:
    (stream, entry id) pairs of the enriched stream acknowledged in the same transaction."""
    with client.pipeline(transaction=True) as pipe:
        dead_letters.record(pipe, letters)
        queue.ack(batch, pipe)
        for stream, entry_id in also or ():
            pipe.xack(stream, keys.ENRICHED_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
        pipe.execute()
    if letters:
        log.warning("batch %s: %d envelope(s) sent to dead letters", batch.id, len(letters))


def store_and_acknowledge(
    client: redis.Redis,
    queue: BatchQueue,
    store: StoreOpening,
    shutdown: threading.Event,
    processed: Processed,
    also: list[tuple[str, str]] | None = None,
) -> None:
    """Insert the batch (retrying), then acknowledge it with its dead letters (see ``acknowledge``)."""
    refusals = write_with_retry(store, processed, shutdown)
    letters = processed.letters + refused_letters(client, processed, refusals)
    acknowledge(client, queue, processed.batch, letters, also)


class StoreAndAcknowledge:
    """Deliver by storing the batch in this process, then acknowledging it."""

    def __init__(self, client: redis.Redis, queue: BatchQueue, store: StoreOpening, shutdown: threading.Event) -> None:
        self.redis = client
        self.queue = queue
        self.store = store
        self.shutdown = shutdown

    def deliver(self, processed: Processed) -> None:
        store_and_acknowledge(self.redis, self.queue, self.store, self.shutdown, processed)


class HandOff:
    """Deliver by appending the batch to the enriched stream for the store writer."""

    def __init__(self, client: redis.Redis, shutdown: threading.Event) -> None:
        self.redis = client
        self.shutdown = shutdown

    def deliver(self, processed: Processed) -> None:
        while self.redis.xlen(keys.ENRICHED_STREAM) >= ENRICHED_MAX_WAITING:
            if self.shutdown.wait(ENRICHED_FULL_POLL_SECONDS):
                raise ShutdownWhileWaiting(processed.batch.id)
        # Pickle, as RQ does for its jobs: only hitstream's own processes write this stream.
        payload = pickle.dumps(processed.without_envelopes(), protocol=pickle.HIGHEST_PROTOCOL)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.ENRICHED_STREAM, {keys.ENRICHED_FIELD: payload})
            pipe.zrem(LANE_KEYS[processed.batch.lane].leases, processed.batch.id)
            pipe.execute()
