"""The store writer: the one process that owns an embedded store while enrichers hand it their
processed batches (workers.delivery.HandOff).

It reads the enriched stream through its consumer group, first what it holds (its pending
entries: a writer killed mid-batch, or cut off from Redis, re-reads them), then new batches.
Each batch is inserted (retrying while the store is unavailable, for as long as it takes:
the batch is safe in Redis meanwhile) and then acknowledged in one transaction: the batch's
lane entries, its dead letters, and its enriched entry. The insert carries the batch id as
its deduplication token, so a batch stored before a kill, or handed off twice, is stored once.
"""

from __future__ import annotations

import logging
import pickle
import threading

import redis

from shared import keys
from workers import metrics
from workers.batches import EnrichedBatch, refused_letters
from workers.context import WorkerContext
from workers.delivery import ShutdownWhileWaiting, StoreGaveUp, acknowledge, write_with_retry

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500  # how long a read waits for a batch before the loop looks at its stop flag


def create_enriched_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(keys.ENRICHED_STREAM, keys.ENRICHED_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


class StoreWriter(threading.Thread):
    """Store and acknowledge the enriched batches, one at a time, until stopped."""

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(name="hitstream-store-writer", daemon=True)
        self.context = context
        self.stopped = context.shutdown_requested

    def run(self) -> None:
        create_enriched_group(self.context.redis)
        held_first = True  # read our own pending entries before new ones
        while not self.stopped.is_set():
            try:
                entries = self._read("0" if held_first else ">")
                if held_first and not entries:
                    held_first = False
                for entry_id, fields in entries:
                    if fields:  # an entry without fields was deleted while pending: nothing left to store
                        self._store(entry_id.decode(), pickle.loads(fields[keys.ENRICHED_FIELD.encode()]))
                    else:
                        self.context.redis.xack(keys.ENRICHED_STREAM, keys.ENRICHED_GROUP, entry_id)
            except redis.RedisError as error:
                log.warning("store writer: Redis error, retrying: %s", error)
                # The batch being stored or acknowledged stays pending in the group, which
                # only a read from "0" returns: without it the batch waited for a restart.
                held_first = True
                self.stopped.wait(1.0)
            except ShutdownWhileWaiting:
                return

    def _read(self, after: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        block = None if after == "0" else READ_BLOCK_MS
        reply = self.context.redis.xreadgroup(
            keys.ENRICHED_GROUP, keys.ENRICHED_CONSUMER, {keys.ENRICHED_STREAM: after}, count=1, block=block
        )
        if not reply:
            return []
        # [[stream, entries]], the RESP2 reply these clients get; redis-py's type also admits RESP3's map.
        assert isinstance(reply, list)
        return reply[0][1]

    def _store(self, entry_id: str, enriched: EnrichedBatch) -> None:
        context = self.context
        batch = enriched.batch
        while True:
            try:
                refusals = write_with_retry(
                    context.store, batch.id, lambda store: store.write_prepared(enriched.prepared), self.stopped
                )
                break
            except StoreGaveUp as error:
                log.error("store writer: %s; still holding batch %s, trying again", error, batch.id)
        letters = enriched.letters + refused_letters(
            context.redis, batch, enriched.row_entries, enriched.drop_entries, refusals
        )
        acknowledge(context.redis, context.batch_queue, batch, letters, entry_id)
        metrics.batch_stored(batch, len(enriched.row_entries) - len(refusals.rows), enriched.drops, letters)
        metrics.crawler_hits_stored(enriched.crawler_hits, refusals.rows)
