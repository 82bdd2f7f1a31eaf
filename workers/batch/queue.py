"""The consumer side of the ingest streams: batches claimed, heart-beaten, acknowledged.

Each lane (shared.lanes) is a stream with the same mechanics. A batch is a stream consumer
in group ``keys.GROUP`` named by ``new_batch_id`` (the id names the lane); its pending
entries are the batch, and the lane's lease set holds its lease deadline (ms). Every
operation is one Lua script, so it is atomic and costs one round trip, and every deadline
is computed from Redis's own clock, so workers on hosts with skewed clocks agree.

A batch whose lease expired (its worker died or stalled) is re-claimed whole under the same
id, so the retried insert carries the same deduplication token and no row is doubled.
Re-claims come first, live lane first. New batches come from the live lane while it has
entries waiting, except that ``bulk_min_share`` of the claims made while both lanes wait
go to the bulk lane, so a replay always progresses (and takes everything live leaves).

In the ``replicated`` durability mode a batch is processed only once its entries are on the
replicas (``WAIT`` after the claim): an entry the API answered 503 for may be queued on the
primary only, and if a worker stored it and the primary then failed over, the client's retry
would be queued again on the promoted replica and stored twice (tests/test_failover.py).
A claim the replicas do not acknowledge in time is released and claimed again later.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from shared import keys
from shared.config import Settings
from shared.lanes import LANE_KEYS, LANES, Lane, lane_of_batch, new_batch_id
from shared.lua import NOW_MS

# Lua's unpack() has a stack limit (~8000); entry ids are passed to commands in chunks.
_CHUNK = 500

_FOR_CHUNKS = f"""
local function for_chunks(ids, first, fn)
  for i = first, #ids, {_CHUNK} do
    fn(unpack(ids, i, math.min(i + {_CHUNK} - 1, #ids)))
  end
end
"""

# KEYS: per lane, live first: stream, leases. ARGV: group, claim timeout ms.
# Re-claims ONE expired batch whole, looking at the live lane first: returns {lane index,
# batch id, {{entry id, {field, value, ...}}, ...}}; when no batch with entries has expired,
# {0, entries waiting in each lane...}, for the caller to pick a lane to read. Also creates
# the groups on first use.
_RECLAIM = (
    NOW_MS
    + _FOR_CHUNKS
    + """
local group, timeout = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local waiting = {0}
for lane = 1, #KEYS / 2 do
  local stream, leases = KEYS[2 * lane - 1], KEYS[2 * lane]
  redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1)
  if #expired == 1 then
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
    else
      local entries = {}
      for_chunks(ids, 1, function(...)
        for _, entry in ipairs(redis.call('XCLAIM', stream, group, batch, 0, ...)) do
          entries[#entries + 1] = entry
        end
      end)
      redis.call('ZADD', leases, now + timeout, batch)
      return {lane, batch, entries}
    end
  end
  waiting[#waiting + 1] = redis.call('XLEN', stream) - redis.call('XPENDING', stream, group)[1]
end
return waiting
"""
)

# Runs in the same MULTI right after XREADGROUP of a new batch, so a batch never exists
# without its lease. KEYS: stream, leases. ARGV: group, batch id, claim timeout ms.
_LEASE_NEW = (
    NOW_MS
    + """
local stream, leases, group, batch = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if #redis.call('XPENDING', stream, group, '-', '+', 1, batch) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, batch)
  return 0
end
redis.call('ZADD', leases, now_ms() + tonumber(ARGV[3]), batch)
return 1
"""
)

# KEYS: the lanes' lease sets. ARGV: claim timeout ms, then per lane: the number of its
# batch ids, the ids. Renews only leases that still exist.
_HEARTBEAT = (
    NOW_MS
    + """
local deadline = now_ms() + tonumber(ARGV[1])
local at = 2
for lane = 1, #KEYS do
  local last = at + tonumber(ARGV[at])
  for i = at + 1, last do
    redis.call('ZADD', KEYS[lane], 'XX', deadline, ARGV[i])
  end
  at = last + 1
end
"""
)

# KEYS: stream, leases, queued-by-token hash. ARGV: group, batch id, then per token: its id
# ('' for entries queued before lanes), the number of its entries, their ids.
# A token's count shrinks by the entries XDEL actually deleted, so an acknowledgement that
# runs twice (a re-claimed batch whose first worker was only slow) counts each entry once.
_ACK = f"""
local stream, leases, counts, group, batch = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
local at = 3
while at <= #ARGV do
  local token, last = ARGV[at], at + 1 + tonumber(ARGV[at + 1])
  local deleted = 0
  for i = at + 2, last, {_CHUNK} do
    local j = math.min(i + {_CHUNK} - 1, last)
    redis.call('XACK', stream, group, unpack(ARGV, i, j))
    deleted = deleted + redis.call('XDEL', stream, unpack(ARGV, i, j))
  end
  -- Exact accounting never goes below 0; a count left negative would show a double count.
  if token ~= '' and deleted > 0 and redis.call('HINCRBY', counts, token, -deleted) == 0 then
    redis.call('HDEL', counts, token)
  end
  at = last + 1
end
redis.call('ZREM', leases, batch)
redis.pcall('XGROUP', 'DELCONSUMER', stream, group, batch)
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str  # stream entry id, "<ms>-<seq>"
    data: bytes  # the envelope JSON (field keys.ENVELOPE_FIELD); b"" if the field is missing
    token_id: str = ""  # the token that queued it (keys.TOKEN_FIELD); "" if the field is missing
    # The tables whose rows are stored (keys.RESTORE_FIELD, on a requeued store dead letter);
    # None: all of them.
    restore: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    id: str  # shared.lanes.new_batch_id: consumer name, lease member, insert deduplication token
    entries: list[Entry]
    reclaimed: bool  # True when recovered from a worker whose lease expired
    # Whether entries were left waiting in either lane when this batch was claimed (a
    # re-claimed batch says True: the count was not taken), so a job keeps chaining batches
    # through a partial live batch while a replay's backlog waits.
    more_waiting: bool = True

    @property
    def lane(self) -> Lane:
        return lane_of_batch(self.id)


_FIELD = keys.ENVELOPE_FIELD.encode()
_TOKEN_FIELD = keys.TOKEN_FIELD.encode()
_RESTORE_FIELD = keys.RESTORE_FIELD.encode()
_RECLAIM_KEYS = [key for lane in LANES for key in (LANE_KEYS[lane].stream, LANE_KEYS[lane].leases)]


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    restore = fields.get(_RESTORE_FIELD)
    return Entry(
        id=entry_id.decode(),
        data=fields.get(_FIELD, b""),
        token_id=fields.get(_TOKEN_FIELD, b"").decode(),
        restore=None if restore is None else frozenset(restore.decode().split(",")),
    )


def _reclaimed_entry(raw: list) -> Entry:
    entry_id, flat = raw  # as Lua returns it: {id, {field, value, ...}}
    return _entry(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {})


def in_transaction(pipe: redis.client.Pipeline, script: str, script_keys: list[str], args: list[str | int]) -> None:
    """Queue ``script`` in ``pipe``'s MULTI as EVAL, never EVALSHA: redis-py checks a
    pipeline's scripts (SCRIPT EXISTS) before sending it, but not again when it retries on a
    new connection, and a Redis restarted or failed over (Sentinel) has an empty script
    cache. EVALSHA then fails inside an EXEC whose other commands ran: a claim's XREADGROUP
    without its lease left a batch no worker re-claims (tests/test_sentinel.py found it).
    The script's text costs a few hundred bytes per batch of up to 1000 entries."""
    pipe.eval(script, len(script_keys), *script_keys, *args)


log = logging.getLogger(__name__)


class BatchQueue:
    """Claim, heart-beat, acknowledge and release batches of the ingest lanes."""

    def __init__(
        self,
        client: redis.Redis,
        claim_timeout_seconds: float,
        bulk_min_share: float = Settings.bulk_min_share,
        replicas: tuple[int, int] | None = None,
    ) -> None:
        self.redis = client
        self.claim_timeout_ms = int(claim_timeout_seconds * 1000)
        self.bulk_min_share = bulk_min_share
        # (replicas, timeout ms) a claim must be acknowledged by before its batch is processed.
        self.replicas = replicas
        self._bulk_credit = 0.0  # grows by bulk_min_share per claim while both lanes wait
        self._reclaim = client.register_script(_RECLAIM)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._ack = client.register_script(_ACK)

    def claim(self, batch_size: int) -> Batch | None:
        """Re-claim one expired batch whole, else claim up to batch_size new entries from the
        lane whose turn it is (see the module docstring).

        New entries are read by XREADGROUP outside Lua (a Lua reply of 1000 envelopes costs
        ~25 ms more), in one MULTI with the script that leases them.
        """
        batch = self._claim(batch_size)
        if batch is None or self.replicas is None or self._replicated(batch):
            return batch
        self.release(batch.id)
        return None

    def _claim(self, batch_size: int) -> Batch | None:
        reclaimed = self._reclaim(keys=_RECLAIM_KEYS, args=[keys.GROUP, self.claim_timeout_ms])
        if reclaimed[0]:
            _, batch_id, entries = reclaimed
            return Batch(id=batch_id.decode(), entries=[_reclaimed_entry(raw) for raw in entries], reclaimed=True)
        waiting = dict(zip(LANES, reclaimed[1:], strict=True))
        for lane in self._turn(waiting):
            batch = self._claim_new(lane, batch_size, sum(waiting.values()))
            if batch is not None:
                return batch
        return None

    def _replicated(self, batch: Batch) -> bool:
        """Whether the replicas acknowledged the claim, and so the entries queued before it.

        WAIT counts the acknowledgements of its own connection's last propagated write, and the
        claim ran on whichever pooled connection was free (and a claim that changed nothing
        propagates nothing): so the WAIT's connection first writes a mark that always reaches
        the replicas, after the claim in the replication stream."""
        assert self.replicas is not None
        needed, timeout_ms = self.replicas
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(keys.REPLICATION_MARK)
            pipe.execute_command("WAIT", needed, timeout_ms)
            _, acknowledged = pipe.execute()
        if acknowledged >= needed:
            return True
        log.warning(
            "batch %s claimed but acknowledged by %d replicas, %d needed: released", batch.id, acknowledged, needed
        )
        return False

    def _turn(self, waiting: dict[Lane, int]) -> list[Lane]:
        """The lanes to read, in order: live first, bulk when its minimum share is due."""
        lanes = [lane for lane in LANES if waiting[lane] > 0]
        if len(lanes) > 1:
            self._bulk_credit += self.bulk_min_share
            if self._bulk_credit >= 1:
                self._bulk_credit -= 1
                lanes.reverse()
        return lanes

    def _claim_new(self, lane: Lane, batch_size: int, waiting: int) -> Batch | None:
        lane_keys = LANE_KEYS[lane]
        batch_id = new_batch_id(lane)
        with self.redis.pipeline(transaction=True) as pipe:
            # What the batch id holds already: nothing, unless this is the client resending the
            # transaction after its reply was lost (the connection broke after Redis ran it).
            # Those entries are the batch's too: left out, its acknowledgement would delete the
            # consumer and leave them in the stream, delivered to nobody.
            pipe.xreadgroup(keys.GROUP, batch_id, {lane_keys.stream: "0"}, count=batch_size)
            pipe.xreadgroup(keys.GROUP, batch_id, {lane_keys.stream: ">"}, count=batch_size)
            in_transaction(
                pipe, _LEASE_NEW, [lane_keys.stream, lane_keys.leases], [keys.GROUP, batch_id, self.claim_timeout_ms]
            )
            held, read, leased = pipe.execute()
        if not leased:
            return None
        entries = [entry for reply in (held, read) if reply for _, stream_entries in reply for entry in stream_entries]
        return Batch(
            id=batch_id,
            entries=[_entry(entry_id, fields) for entry_id, fields in entries],
            reclaimed=False,
            more_waiting=waiting > len(entries),
        )

    def heartbeat(self, *batch_ids: str) -> None:
        """Push the lease deadlines one claim timeout into the future."""
        if batch_ids:
            by_lane = _by_lane(batch_ids)
            args: list[str | int] = [self.claim_timeout_ms]
            for lane in LANES:
                args += (len(by_lane[lane]), *by_lane[lane])
            self._heartbeat(keys=[LANE_KEYS[lane].leases for lane in LANES], args=args)

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
        """Forget a stored batch: XACK + XDEL its entries, shrink its tokens' counts, drop its
        lease and consumer.

        With ``pipe``, the script joins that transaction (e.g. together with dead letters).
        """
        by_token: defaultdict[str, list[str]] = defaultdict(list)
        for entry in batch.entries:
            by_token[entry.token_id].append(entry.id)
        args: list[str | int] = [keys.GROUP, batch.id]
        for token_id, entry_ids in by_token.items():
            args += (token_id, len(entry_ids), *entry_ids)
        lane_keys = LANE_KEYS[batch.lane]
        script_keys = [lane_keys.stream, lane_keys.leases, lane_keys.queued_by_token]
        if pipe is None:
            self._ack(keys=script_keys, args=args)
        else:
            in_transaction(pipe, _ACK, script_keys, args)

    def release(self, *batch_ids: str) -> None:
        """Expire leases now, so the next claims pick those batches up again immediately."""
        with self.redis.pipeline(transaction=False) as pipe:
            for lane, ids in _by_lane(batch_ids).items():
                if ids:
                    pipe.zadd(LANE_KEYS[lane].leases, dict.fromkeys(ids, 0), xx=True)
            pipe.execute()


def _by_lane(batch_ids: tuple[str, ...]) -> dict[Lane, list[str]]:
    by_lane: dict[Lane, list[str]] = {lane: [] for lane in LANES}
    for batch_id in batch_ids:
        by_lane[lane_of_batch(batch_id)].append(batch_id)
    return by_lane
