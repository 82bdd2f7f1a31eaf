"""Bound how long visitor IPs stay in Redis's files after their pageviews were processed.

An envelope carries the raw visitor IP through the stream. Acknowledging it deletes the
entry from Redis's memory, but Redis's files keep it: the AOF keeps every ``XADD`` until
Redis next rewrites the file (by itself only when the AOF has doubled), and an RDB snapshot
keeps what the stream held when it was taken. So the workers ask Redis to rewrite its files
(``BGREWRITEAOF``; ``BGSAVE SCHEDULE`` too when RDB snapshots are configured or Redis does
not say) once ``HITSTREAM_REWRITE_AFTER_ENTRIES`` pageviews were processed since the last
rewrite, or ``HITSTREAM_REWRITE_AFTER_SECONDS`` after it when any was.

"Processed" is the stream's ``entries-added`` minus its length (XINFO STREAM): acknowledged
entries are deleted, so Redis counts them itself and acknowledging costs nothing extra. The
count and Redis time of the last rewrite live in ``keys.REWRITE_STATE``; ``keys.REWRITE_LOCK``
(SET NX, one check interval) lets one worker at a time decide, so many workers trigger one
rewrite. The time bound starts at the first check ever made against this Redis. A rewrite
already running (Redis's own) may predate the latest deletions, so the check is repeated
until Redis takes a new one.
"""

from __future__ import annotations

import logging
import os
import threading

import redis

from shared import keys
from shared.config import Settings
from shared.control.changes import text_hash

log = logging.getLogger(__name__)

# How often each worker process checks (one SET NX; the winner reads XINFO STREAM and TIME).
CHECK_SECONDS = 1.0
# After a failed check (Redis away, or a managed Redis that refuses BGREWRITEAOF), wait this
# much longer, so the log gets one warning a minute rather than one a second.
FAILED_CHECK_PAUSE_SECONDS = 60.0


class RewriteTrigger:
    """Asks Redis to rewrite its files when due; ``start`` runs the checks on a thread."""

    def __init__(self, client: redis.Redis, after_entries: int, after_seconds: float) -> None:
        self.redis = client
        self.after_entries = after_entries
        self.after_ms = int(after_seconds * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hitstream-redis-rewrite", daemon=True)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> RewriteTrigger:
        return cls(client, settings.rewrite_after_entries, settings.rewrite_after_seconds)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            try:
                self.check()
            except redis.RedisError as error:
                log.warning("could not have Redis rewrite its files (visitor IPs stay in them meanwhile): %s", error)
                self._stop.wait(FAILED_CHECK_PAUSE_SECONDS)

    def check(self) -> bool:
        """One check; True when this call asked Redis to rewrite its files."""
        if not self.redis.set(keys.REWRITE_LOCK, os.getpid(), nx=True, px=int(CHECK_SECONDS * 1000)):
            return False  # another worker checks now
        processed = self._processed()
        if processed is None:
            return False
        seconds, microseconds = self.redis.time()
        now_ms = seconds * 1000 + microseconds // 1000
        state = text_hash(self.redis.hgetall(keys.REWRITE_STATE))
        if state:
            last_processed, last_ms = int(state["processed"]), int(state["at_ms"])
        else:
            # The first check ever: the time bound starts now, every processed entry counts.
            last_processed, last_ms = 0, now_ms
            self.redis.hset(keys.REWRITE_STATE, mapping={"processed": last_processed, "at_ms": last_ms})
        # A smaller count than last time: the stream was deleted and began again.
        since = processed - last_processed if processed >= last_processed else processed
        due = since >= self.after_entries or (since > 0 and now_ms - last_ms >= self.after_ms)
        if not due or not self._rewrite(since):
            return False
        self.redis.hset(keys.REWRITE_STATE, mapping={"processed": processed, "at_ms": now_ms})
        return True

    def _processed(self) -> int | None:
        """Entries ever added to the stream and no longer in it: processed and deleted."""
        try:
            info = self.redis.xinfo_stream(keys.STREAM)
        except redis.ResponseError:  # no stream yet
            return None
        added = info.get("entries-added")
        return None if added is None else int(added) - int(info["length"])

    def _rewrite(self, processed_since: int) -> bool:
        """BGREWRITEAOF (when AOF is on) and BGSAVE (when snapshots are or may be configured);
        False when Redis is busy with a rewrite it began earlier (try again later)."""
        if int(self.redis.info("persistence").get("aof_enabled", 0)):
            try:
                self.redis.bgrewriteaof()
            except redis.ResponseError as error:
                if "already in progress" in str(error):
                    return False
                raise
        if self._snapshots_configured():
            # SCHEDULE: when the AOF rewrite's child is still running, Redis saves after it.
            self.redis.bgsave(schedule=True)
        log.info("asked Redis to rewrite its files: %d pageviews processed since the last rewrite", processed_since)
        return True

    def _snapshots_configured(self) -> bool:
        try:
            return bool(self.redis.config_get("save").get("save"))
        except redis.ResponseError:  # CONFIG disabled (managed Redis): an old dump may exist
            return True
