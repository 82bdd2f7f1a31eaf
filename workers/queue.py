"""The consumer side of the ingest stream: batches claimed, heart-beaten, acknowledged.

A batch is a stream consumer named ``b:<uuid4>`` in group ``keys.GROUP``; its pending
entries are the batch, and ``keys.BATCH_LEASES`` holds its lease deadline (ms). Every
operation is one Lua script, so it is atomic and costs one round trip, and every deadline
is computed from Redis's own clock, so workers on hosts with skewed clocks agree.

A batch whose lease expired (its worker died or stalled) is re-claimed whole under the same
id, so the retried insert carries the same deduplication token and no row is doubled.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from shared import keys

# Lua's unpack() has a stack limit (~8000); entry ids are passed to commands in chunks.
_CHUNK = 500

_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_FOR_CHUNKS = f"""
local function for_chunks(ids, first, fn)
  for i = first, #ids, {_CHUNK} do
    fn(unpack(ids, i, math.min(i + {_CHUNK} - 1, #ids)))
  end
end
"""

# KEYS: stream, leases. ARGV: group, claim timeout ms.
# Re-claims ONE expired batch whole: returns {batch id, {{entry id, {field, value}}, ...}}, or
# nil when no batch with entries has expired. Also creates the group on first use.
_RECLAIM = _NOW_MS + _FOR_CHUNKS + """
local stream, leases, group, timeout = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1)
if #expired == 0 then return nil end
local batch = expired[1]
local ids, after = {}, '-'
while true do
  local page = redis.call('XPENDING', stream, group, after, '+', 1000, batch)
  if #page == 0 then break end
  for _, item in ipairs(page) do ids[#ids + 1] = item[1] end
  after = '(' .. page[#page][1]
end
if #ids == 0 then
  -- A lease without entries holds nothing to recover (its claim read nothing).
  redis.call('ZREM', leases, batch)
  redis.pcall('XGROUP', 'DELCONSUMER', stream, group, batch)
  return nil
end
local entries = {}
for_chunks(ids, 1, function(...)
  for _, entry in ipairs(redis.call('XCLAIM', stream, group, batch, 0, ...)) do
    entries[#entries + 1] = entry
  end
end)
redis.call('ZADD', leases, now + timeout, batch)
return {batch, entries}
"""

# Runs in the same MULTI right after XREADGROUP of a new batch, so a batch never exists
# without its lease. KEYS: stream, leases. ARGV: group, batch id, claim timeout ms.
_LEASE_NEW = _NOW_MS + """
local stream, leases, group, batch = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if #redis.call('XPENDING', stream, group, '-', '+', 1, batch) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, batch)
  return 0
end
redis.call('ZADD', leases, now_ms() + tonumber(ARGV[3]), batch)
return 1
"""

# KEYS: leases. ARGV: claim timeout ms, batch ids... Renews only leases that still exist.
_HEARTBEAT = _NOW_MS + """
local deadline = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
"""

# KEYS: stream, leases. ARGV: group, batch id, entry ids...
_ACK = _FOR_CHUNKS + """
local stream, leases, group, batch = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
for_chunks(ARGV, 3, function(...)
  redis.call('XACK', stream, group, ...)
  redis.call('XDEL', stream, ...)
end)
redis.call('ZREM', leases, batch)
redis.pcall('XGROUP', 'DELCONSUMER', stream, group, batch)
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str  # stream entry id, "<ms>-<seq>"
    data: bytes  # the envelope JSON (field keys.ENVELOPE_FIELD); b"" if the field is missing


@dataclass(frozen=True, slots=True)
class Batch:
    id: str  # "b:<uuid4>": consumer name, lease member and insert deduplication token
    entries: list[Entry]
    reclaimed: bool  # True when recovered from a worker whose lease expired


_FIELD = keys.ENVELOPE_FIELD.encode()


def _reclaimed_entry(raw: list) -> Entry:
    entry_id, flat = raw  # as Lua returns it: {id, {field, value, ...}}
    fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
    return Entry(id=entry_id.decode(), data=fields.get(_FIELD, b""))


class BatchQueue:
    """Claim, heart-beat, acknowledge and release batches of the ingest stream."""

    def __init__(self, client: redis.Redis, claim_timeout_seconds: float) -> None:
        self.redis = client
        self.claim_timeout_ms = int(claim_timeout_seconds * 1000)
        self._reclaim = client.register_script(_RECLAIM)
        self._lease_new = client.register_script(_LEASE_NEW)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._ack = client.register_script(_ACK)

    def claim(self, batch_size: int) -> Batch | None:
        """Re-claim one expired batch whole, else claim up to batch_size new entries.

        New entries are read by XREADGROUP outside Lua (a Lua reply of 1000 envelopes costs
        ~25 ms more), in one MULTI with the script that leases them.
        """
        stream_keys = [keys.STREAM, keys.BATCH_LEASES]
        reclaimed = self._reclaim(keys=stream_keys, args=[keys.GROUP, self.claim_timeout_ms])
        if reclaimed is not None:
            batch_id, entries = reclaimed
            return Batch(id=batch_id.decode(), entries=[_reclaimed_entry(raw) for raw in entries], reclaimed=True)
        batch_id = f"b:{uuid.uuid4()}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xreadgroup(keys.GROUP, batch_id, {keys.STREAM: ">"}, count=batch_size)
            self._lease_new(keys=stream_keys, args=[keys.GROUP, batch_id, self.claim_timeout_ms], client=pipe)
            read, leased = pipe.execute()
        if not leased:
            return None
        (_, entries), = read
        return Batch(
            id=batch_id,
            entries=[Entry(id=entry_id.decode(), data=fields.get(_FIELD, b"")) for entry_id, fields in entries],
            reclaimed=False,
        )

    def heartbeat(self, *batch_ids: str) -> None:
        """Push the lease deadlines one claim timeout into the future."""
        if batch_ids:
            self._heartbeat(keys=[keys.BATCH_LEASES], args=[self.claim_timeout_ms, *batch_ids])

    @contextmanager
    def leases_kept(self) -> Iterator[set[str]]:
        """Heart-beat, from a thread, the leases of the batch ids in the yielded set while the
        body runs (however long); the body adds a batch when it claims it and removes it once
        acknowledged or released."""
        held: set[str] = set()
        done = threading.Event()
        interval = self.claim_timeout_ms / 1000 / 3

        def beat() -> None:
            while not done.wait(interval):
                try:
                    self.heartbeat(*tuple(held))
                except redis.RedisError:
                    pass  # the next beat retries; a lost lease only means a deduplicated retry

        thread = threading.Thread(target=beat, name="batch leases", daemon=True)
        thread.start()
        try:
            yield held
        finally:
            done.set()
            thread.join()

    def ack(self, batch: Batch, pipe: redis.client.Pipeline | None = None) -> None:
        """Forget a stored batch: XACK + XDEL its entries, drop its lease and consumer.

        With ``pipe``, the script joins that transaction (e.g. together with dead letters).
        """
        self._ack(
            keys=[keys.STREAM, keys.BATCH_LEASES],
            args=[keys.GROUP, batch.id, *(entry.id for entry in batch.entries)],
            client=pipe,
        )

    def release(self, *batch_ids: str) -> None:
        """Expire leases now, so the next claims pick those batches up again immediately."""
        if batch_ids:
            self.redis.zadd(keys.BATCH_LEASES, dict.fromkeys(batch_ids, 0), xx=True)
