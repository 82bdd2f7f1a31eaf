"""A lane's backlog in one Lua call: depth, waiting, expired leases, entries added and the
oldest waiting entry's age, per lane; and the batches enrichers handed to the store writer.
The worker dispatcher polls it several times a second, the API's ``/metrics`` reads it at
scrape time and ``hitstream queue`` builds on it (``workers.queue_stats``). Entries leave a
stream only when acknowledged, so entries added minus depth is the number acknowledged.

A batch passed to the store writer (workers.batch.delivery.PassToWriter) is neither waiting nor
held by a worker: its entries stay claimed in their lane until the writer acknowledges them, but the
hand-off dropped its lease. So it is found as a lane's consumer with pending entries and no
lease (every other claimed batch has one: a claim and its lease are one transaction). It is
counted from the lanes, not from the enriched stream, because that stream's entries carry
the batch's Arrow blocks (~0.5 MB each) and Lua would copy each one it looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared import keys
from shared.lanes import LANE_KEYS, LANES, Lane
from shared.lua import NOW_MS

# KEYS: per lane, live first: stream, leases. ARGV: group.
# Returns {Redis time ms, then per lane: depth, claimed (pending) entries, expired leases,
# entries ever added, ms of the oldest entry no batch has read yet (-1: none); then, over
# both lanes, the batches handed to the store writer, their entries, and the longest time
# since one of them was claimed (its consumer's idle ms; -1: none)}.
BACKLOG_SCRIPT = (
    NOW_MS
    + """
local figures = {now_ms()}
local handed, handed_entries, handed_idle = 0, 0, -1
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
  if pending > 0 then  -- only claimed entries can be with the writer
    for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, ARGV[1])) do
      local fields = {}
      for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
      if fields['pending'] > 0 and not redis.call('ZSCORE', leases, fields['name']) then
        handed, handed_entries = handed + 1, handed_entries + fields['pending']
        handed_idle = math.max(handed_idle, fields['idle'])
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
for _, figure in ipairs({handed, handed_entries, handed_idle}) do
  figures[#figures + 1] = figure
end
return figures
"""
)
BACKLOG_KEYS: tuple[str, ...] = tuple(key for lane in LANES for key in (LANE_KEYS[lane].stream, LANE_KEYS[lane].leases))
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
class EnrichedBacklog:
    """Batches enrichers handed to the store writer that it has not stored and acknowledged
    yet (always none without enrichers: with a ClickHouse server, or one worker process)."""

    batches: int
    pageviews: int  # their lane entries (pageviews and events)
    oldest_age_seconds: float | None  # since the longest-waiting one was claimed; None when none waits


@dataclass(frozen=True, slots=True)
class Backlog:
    lanes: dict[Lane, LaneBacklog]
    enriched: EnrichedBacklog
    now_ms: int  # Redis server time

    @property
    def waiting(self) -> int:
        return sum(lane.waiting for lane in self.lanes.values())

    @property
    def expired_batches(self) -> int:
        return sum(lane.expired_batches for lane in self.lanes.values())


def parse_backlog(reply: list[int]) -> Backlog:
    """The figures of BACKLOG_SCRIPT's reply (for the API's asynchronous client too)."""
    now_ms = int(reply[0])
    lanes = {}
    for index, lane in enumerate(LANES):
        depth, pending, expired, added, oldest_ms = reply[
            1 + index * _FIGURES_PER_LANE : 1 + (index + 1) * _FIGURES_PER_LANE
        ]
        lanes[lane] = LaneBacklog(
            depth=depth,
            waiting=max(depth - pending, 0),
            expired_batches=expired,
            added_total=added,
            acknowledged_total=max(added - depth, 0),
            oldest_waiting_age_seconds=None if oldest_ms < 0 else max(now_ms - oldest_ms, 0) / 1000,
        )
    batches, pageviews, idle_ms = reply[1 + len(LANES) * _FIGURES_PER_LANE :]
    enriched = EnrichedBacklog(
        batches=batches, pageviews=pageviews, oldest_age_seconds=None if idle_ms < 0 else idle_ms / 1000
    )
    return Backlog(lanes=lanes, enriched=enriched, now_ms=now_ms)


def queue_backlog(client: redis.Redis) -> Backlog:
    return parse_backlog(client.eval(BACKLOG_SCRIPT, len(BACKLOG_KEYS), *BACKLOG_KEYS, keys.GROUP))
