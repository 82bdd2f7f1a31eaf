"""The store writer: the one process that owns an embedded store while enrichers hand it their
enriched batches (workers.batch.delivery.PassToWriter).

It reads the enriched stream through its consumer group, before every new batch what it
holds (its pending entries: the batch it was storing when it was killed or cut off from Redis,
and those a read delivered whose reply was lost), then the next new batch.
Each batch is stored the one way every batch is (workers.batch.delivery.StoreAndAcknowledge),
retrying while the store is unavailable for as long as it takes (the batch is safe in Redis
meanwhile), and acknowledged in one transaction: the batch's lane entries, its dead letters,
and its enriched entry. The insert carries the batch id as its deduplication token, so a batch
stored before a kill, or handed off twice, is stored once.
"""

from __future__ import annotations

import logging
import pickle
import threading

import redis

from shared import keys
from workers.batch.delivery import ShutdownWhileWaiting, StoreAndAcknowledge, StoreGaveUp
from workers.batch.enrichment import WriterBatch

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

    def __init__(self, client: redis.Redis, storing: StoreAndAcknowledge, stopped: threading.Event) -> None:
        super().__init__(name="hitstream-store-writer", daemon=True)
        self.redis = client
        self.storing = storing
        self.stopped = stopped

    def run(self) -> None:
        create_enriched_group(self.redis)
        while not self.stopped.is_set():
            try:
                # Only a read from "0" returns what this consumer holds: the batch it was
                # storing when a Redis error stopped it, and the batches of a read whose reply
                # was lost (the patient client sends the read again, Redis has run both). Read
                # from ">" alone, those waited for a restart (tests/test_store_writer.py).
                entries = self._read("0") or self._read(">")
                for entry_id, fields in entries:
                    if fields:  # an entry without fields was deleted while pending: nothing left to store
                        self._store(entry_id.decode(), pickle.loads(fields[keys.ENRICHED_FIELD.encode()]))
                    else:
                        self.redis.xack(keys.ENRICHED_STREAM, keys.ENRICHED_GROUP, entry_id)
            except redis.RedisError as error:
                log.warning("store writer: Redis error, retrying: %s", error)
                self.stopped.wait(1.0)
            except ShutdownWhileWaiting:
                return

    def _read(self, after: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        block = None if after == "0" else READ_BLOCK_MS
        reply = self.redis.xreadgroup(
            keys.ENRICHED_GROUP, keys.ENRICHED_CONSUMER, {keys.ENRICHED_STREAM: after}, count=1, block=block
        )
        if not reply:
            return []
        # [[stream, entries]], the RESP2 reply these clients get; redis-py's type also admits RESP3's map.
        assert isinstance(reply, list)
        return reply[0][1]

    def _store(self, entry_id: str, storable: WriterBatch) -> None:
        while True:
            try:
                self.storing.store_batch(storable, entry_id)
                return
            except StoreGaveUp as error:
                log.error("store writer: %s; still holding batch %s, trying again", error, storable.batch.id)
