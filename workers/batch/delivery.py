"""The last stage of a batch: store it, then acknowledge it; or pass it to the store writer.

``StoreAndAcknowledge`` is the single-process path (and every process's, with a ClickHouse
server): insert with retry while the store is unavailable, then acknowledge the batch with
its dead letters in one transaction. ``PassToWriter`` is an enricher's, when several processes
share one embedded store: one transaction appends the enriched batch to the enriched
stream (keys.ENRICHED_STREAM) and drops its lease, so no other enricher re-claims it; the
batch's entries stay pending in their lane until the store writer (workers.batch.store_writer)
has stored them and acknowledges them. A kill before that transaction leaves the lease to
expire (the batch is re-claimed, same id); after it, the batch is in the enriched stream, which the writer
reads through a consumer group, so a killed writer re-reads what it held. Every insert
carries the batch id as its deduplication token, so a batch delivered twice is stored once.

The store writer stores what it is passed with ``StoreAndAcknowledge.store_batch`` too: one
path (insert with retry, dead letters for refused rows, acknowledge, metrics) for a batch's
two shapes (``Storable``: this process's ``EnrichedBatch``, an enricher's ``WriterBatch``).

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
from typing import Protocol

import redis

from shared import keys
from shared.envelope import Envelope
from shared.lanes import LANE_KEYS
from workers.batch import dead_letters, metrics
from workers.batch.dead_letters import DeadLetter
from workers.batch.enrichment import EnrichedBatch, WriterBatch
from workers.batch.queue import Batch, BatchQueue
from workers.store.opening import StoreOpening
from workers.store.store import Refusals, Store
from workers.store.unavailable import StoreUnavailable

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


# A batch's two shapes: this process's own, or one an enricher passed the store writer.
Storable = EnrichedBatch | WriterBatch


class Delivery(Protocol):
    def deliver(self, enriched: EnrichedBatch) -> None:
        """Hand ``enriched`` on; once this returns, the batch is no longer the caller's to keep."""


def insert(store: Store, storable: Storable) -> Refusals:
    """Insert ``storable``'s rows and drop counts (a WriterBatch's inserts were built already)."""
    if isinstance(storable, WriterBatch):
        return store.write_prepared(storable.prepared)
    return store.write_batch(storable.batch.id, storable.rows, storable.drops)


def insert_with_retry(store: StoreOpening, storable: Storable, shutdown: threading.Event) -> Refusals:
    """Insert ``storable`` into the store, with exponential backoff while the store is
    unavailable; return what the store refused. Raises StoreGaveUp after STORE_RETRY_SECONDS,
    ShutdownWhileWaiting when a warm shutdown interrupts the wait."""
    batch_id = storable.batch.id
    deadline = time.monotonic() + STORE_RETRY_SECONDS
    delay = STORE_RETRY_FIRST_DELAY
    while True:
        try:
            with metrics.timed_insert():
                return insert(store.get(), storable)
        except StoreUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise StoreGaveUp(f"store unavailable for {STORE_RETRY_SECONDS:.0f} s: {error}") from error
            metrics.store_retried()
            log.warning("batch %s: store unavailable, retrying in %.1f s: %s", batch_id, delay, error)
        if shutdown.wait(delay):
            raise ShutdownWhileWaiting(batch_id)
        delay = min(delay * 2, STORE_RETRY_MAX_DELAY)


def refused_letters(client: redis.Redis, storable: Storable, refusals: Refusals) -> list[DeadLetter]:
    """Dead letters (step "store") for the entries whose rows or drop counts the store refused,
    their envelopes read back from the lane's stream; each names the tables of its refused rows."""
    batch = storable.batch
    # One letter per entry, though a crawler's pageview and its hit may both be refused.
    refused: dict[str, tuple[str, set[str]]] = {}
    for position, error in sorted(refusals.rows.items()):
        _, tables = refused.setdefault(storable.row_entries[position], (error, set()))
        tables.add(storable.row_tables[position])
    refused.update((storable.drop_entries[position], (error, set())) for position, error in refusals.drops.items())
    stream = LANE_KEYS[batch.lane].stream
    letters = []
    for entry_id, (error, tables) in refused.items():
        found = client.xrange(stream, entry_id, entry_id)
        fields = found[0][1] if found else None
        if fields:  # gone only if a duplicate delivery of this batch acknowledged it already
            envelope = Envelope.from_json(fields[keys.ENVELOPE_FIELD.encode()])
            letters.append(dead_letters.for_refused_rows(entry_id, batch.id, envelope, tables, error))
    return letters


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

    def deliver(self, enriched: EnrichedBatch) -> None:
        self.store_batch(enriched)

    def store_batch(self, storable: Storable, enriched_entry: str | None = None) -> None:
        """Insert, dead letters for what the store refused, acknowledge, count: for a batch of
        this process, or (``enriched_entry``) one the store writer read from the enriched stream."""
        refusals = insert_with_retry(self.store, storable, self.shutdown)
        letters = storable.letters + refused_letters(self.redis, storable, refusals)
        batch = storable.batch
        acknowledge(self.redis, self.queue, batch, letters, enriched_entry)
        metrics.batch_stored(batch, len(storable.row_entries) - len(refusals.rows), storable.drops, letters)
        metrics.crawler_hits_stored(storable.crawler_hits, refusals.rows)


class PassToWriter:
    """Deliver by appending the batch's inserts to the enriched stream for the store writer."""

    def __init__(self, client: redis.Redis, shutdown: threading.Event) -> None:
        self.redis = client
        self.shutdown = shutdown

    def deliver(self, enriched: EnrichedBatch) -> None:
        batch = enriched.batch
        while self.redis.xlen(keys.ENRICHED_STREAM) >= ENRICHED_MAX_WAITING:
            if self.shutdown.wait(ENRICHED_FULL_POLL_SECONDS):
                raise ShutdownWhileWaiting(batch.id)
        # Pickle, as RQ does for its jobs (only hitstream's own processes write this stream);
        # the rows travel inside as Arrow blocks (workers.store.blocks says what that saves).
        payload = pickle.dumps(WriterBatch.of(enriched), protocol=pickle.HIGHEST_PROTOCOL)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.ENRICHED_STREAM, {keys.ENRICHED_FIELD: payload})
            pipe.zrem(LANE_KEYS[batch.lane].leases, batch.id)
            pipe.execute()
