"""Figures about the ingest queue's lanes, for ``hitstream queue`` and the API's ``/metrics``.

``queue_backlog`` is the cheap part (one Lua call: depth, waiting, expired leases, entries
added, oldest waiting age, per lane) that the worker dispatcher polls several times a
second; ``collect_queue_stats`` adds rates, the per-batch and the RQ figures an operator reads.
Entries leave a stream only when acknowledged, so entries added minus depth is the number
acknowledged: two counters per lane whose rates are the lane's inflow and outflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from shared import keys
from shared.lanes import LANE_KEYS, LANES, Lane

# RQ queues: process_batch jobs, and read queries for the process that owns the store
# (an embedded chdb path can be opened by one process only).
BATCH_QUEUE = "hitstream"
STORE_QUEUE = "hitstream-store"

# KEYS: per lane, live first: stream, leases. ARGV: group.
# Returns {Redis time ms, then per lane: depth, claimed (pending) entries, expired leases,
# entries ever added, ms of the oldest entry no batch has read yet (-1: none)}.
BACKLOG_SCRIPT = """
local t = redis.call('TIME')
local figures = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
for lane = 1, #KEYS / 2 do
  local stream, leases = KEYS[2 * lane - 1], KEYS[2 * lane]
  local pending, added, start, oldest = 0, 0, '-', -1
  local info = redis.pcall('XINFO', 'STREAM', stream)
  if not info.err then  -- no stream yet: nothing added
    for i = 1, #info, 2 do
      if info[i] == 'entries-added' then added = info[i + 1] end
    end
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local fields = {}
      for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
      if fields['name'] == ARGV[1] then
        pending, start = fields['pending'], '(' .. fields['last-delivered-id']
      end
    end
  end
  local first = redis.call('XRANGE', stream, start, '+', 'COUNT', 1)
  if #first > 0 then oldest = tonumber(string.match(first[1][1], '^%d+')) end
  local expired = redis.call('ZCOUNT', leases, '-inf', figures[1])
  for _, figure in ipairs({redis.call('XLEN', stream), pending, expired, added, oldest}) do
    figures[#figures + 1] = figure
  end
end
return figures
"""
BACKLOG_KEYS: tuple[str, ...] = tuple(
    key for lane in LANES for key in (LANE_KEYS[lane].stream, LANE_KEYS[lane].leases)
)
_FIGURES_PER_LANE = 5


@dataclass(frozen=True, slots=True)
class LaneBacklog:
    depth: int  # entries in the stream: waiting plus claimed (acknowledged ones are deleted)
    waiting: int  # entries no batch has claimed yet
    expired_batches: int  # claimed batches whose lease ran out: ready to be re-claimed
    added_total: int  # entries ever appended to the lane's stream
    acknowledged_total: int  # entries ever stored (or dead-lettered) and deleted
    oldest_waiting_age_seconds: float | None  # None when nothing waits


@dataclass(frozen=True, slots=True)
class Backlog:
    lanes: dict[Lane, LaneBacklog]
    now_ms: int  # Redis server time

    @property
    def waiting(self) -> int:
        return sum(lane.waiting for lane in self.lanes.values())

    @property
    def expired_batches(self) -> int:
        return sum(lane.expired_batches for lane in self.lanes.values())


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    id: str
    entries: int
    age_seconds: float  # since the batch was (re-)claimed
    lease_expired: bool


@dataclass(frozen=True, slots=True)
class LaneStats:
    backlog: LaneBacklog
    added_per_second: float | None  # over the sampling interval; None when not sampled
    acknowledged_per_second: float | None
    claimed_batches: list[ClaimedBatch]


@dataclass(frozen=True, slots=True)
class QueueStats:
    lanes: dict[Lane, LaneStats]
    live_workers: int
    failed_jobs: int
    dead_letters: int


def parse_backlog(reply: list[int]) -> Backlog:
    """The figures of BACKLOG_SCRIPT's reply (for the API's asynchronous client too)."""
    now_ms = int(reply[0])
    lanes = {}
    for index, lane in enumerate(LANES):
        depth, pending, expired, added, oldest_ms = reply[1 + index * _FIGURES_PER_LANE : 1 + (index + 1) * _FIGURES_PER_LANE]
        lanes[lane] = LaneBacklog(
            depth=depth,
            waiting=max(depth - pending, 0),
            expired_batches=expired,
            added_total=added,
            acknowledged_total=max(added - depth, 0),
            oldest_waiting_age_seconds=None if oldest_ms < 0 else max(now_ms - oldest_ms, 0) / 1000,
        )
    return Backlog(lanes=lanes, now_ms=now_ms)


def queue_backlog(client: redis.Redis) -> Backlog:
    return parse_backlog(client.eval(BACKLOG_SCRIPT, len(BACKLOG_KEYS), *BACKLOG_KEYS, keys.GROUP))


def _claimed_batches(client: redis.Redis, lane: Lane, now_ms: int) -> list[ClaimedBatch]:
    lane_keys = LANE_KEYS[lane]
    leases = {member.decode(): score for member, score in client.zrange(lane_keys.leases, 0, -1, withscores=True)}
    try:
        consumers = client.xinfo_consumers(lane_keys.stream, keys.GROUP)
    except redis.ResponseError:  # no stream or group yet
        return []
    batches = [
        ClaimedBatch(
            id=consumer["name"].decode(),
            entries=consumer["pending"],
            age_seconds=consumer["idle"] / 1000,
            lease_expired=leases.get(consumer["name"].decode(), 0) <= now_ms,
        )
        for consumer in consumers
        if consumer["pending"]
    ]
    return sorted(batches, key=lambda batch: -batch.age_seconds)


def _per_second(later: int, earlier: int, seconds: float) -> float | None:
    return (later - earlier) / seconds if seconds > 0 else None


def collect_queue_stats(client: redis.Redis, rate_seconds: float = 0.0) -> QueueStats:
    """Every figure; the rates are measured over ``rate_seconds`` (None for 0)."""
    earlier = queue_backlog(client)
    if rate_seconds > 0:
        time.sleep(rate_seconds)
    backlog = queue_backlog(client) if rate_seconds > 0 else earlier
    seconds = (backlog.now_ms - earlier.now_ms) / 1000
    rq_queue = Queue(BATCH_QUEUE, connection=client)
    return QueueStats(
        lanes={
            lane: LaneStats(
                backlog=figures,
                added_per_second=_per_second(figures.added_total, earlier.lanes[lane].added_total, seconds),
                acknowledged_per_second=_per_second(
                    figures.acknowledged_total, earlier.lanes[lane].acknowledged_total, seconds
                ),
                claimed_batches=_claimed_batches(client, lane, backlog.now_ms),
            )
            for lane, figures in backlog.lanes.items()
        },
        live_workers=len(Worker.all(connection=client, queue=rq_queue)),
        failed_jobs=FailedJobRegistry(queue=rq_queue).count,
        dead_letters=int(client.hlen(keys.DEAD_LETTERS)),
    )
