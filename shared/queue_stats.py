"""Figures about the ingest queue, for ``hitstream queue`` and the API's ``/metrics``.

``queue_backlog`` is the cheap part (one Lua call) that the worker dispatcher polls several
times a second; ``collect_queue_stats`` adds the per-batch and RQ figures an operator reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from shared import keys

# RQ queues: process_batch jobs, and read queries for the process that owns the store
# (an embedded chdb path can be opened by one process only).
BATCH_QUEUE = "hitstream"
STORE_QUEUE = "hitstream-store"

# KEYS: stream, leases. ARGV: group.
# Returns {depth, pending (claimed entries), expired leases, Redis time ms}.
_BACKLOG = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local depth = redis.call('XLEN', KEYS[1])
local pending = 0
local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if not summary.err then pending = summary[1] end  -- no group yet: nothing claimed
local expired = redis.call('ZCOUNT', KEYS[2], '-inf', now)
return {depth, pending, expired, now}
"""


@dataclass(frozen=True, slots=True)
class Backlog:
    depth: int  # entries in the stream: waiting plus claimed (acknowledged ones are deleted)
    waiting: int  # entries no batch has claimed yet
    expired_batches: int  # claimed batches whose lease ran out: ready to be re-claimed
    now_ms: int  # Redis server time


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    id: str
    entries: int
    age_seconds: float  # since the batch was (re-)claimed
    lease_expired: bool


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    waiting: int
    oldest_waiting_age_seconds: float | None  # None when nothing waits
    claimed_batches: list[ClaimedBatch]
    live_workers: int
    failed_jobs: int
    dead_letters: int


def queue_backlog(client: redis.Redis) -> Backlog:
    depth, pending, expired, now_ms = client.eval(_BACKLOG, 2, keys.STREAM, keys.BATCH_LEASES, keys.GROUP)
    return Backlog(depth=depth, waiting=max(depth - pending, 0), expired_batches=expired, now_ms=now_ms)


def _oldest_waiting_age(client: redis.Redis, now_ms: int) -> float | None:
    """Age of the first entry no batch has read yet (after the group's last delivered id)."""
    start = "-"
    try:
        for group in client.xinfo_groups(keys.STREAM):
            if group["name"].decode() == keys.GROUP:
                start = "(" + group["last-delivered-id"].decode()
    except redis.ResponseError:  # no stream yet
        return None
    first = client.xrange(keys.STREAM, min=start, count=1)
    if not first:
        return None
    entry_ms = int(first[0][0].decode().split("-")[0])
    return max(now_ms - entry_ms, 0) / 1000


def _claimed_batches(client: redis.Redis, now_ms: int) -> list[ClaimedBatch]:
    leases = {member.decode(): score for member, score in client.zrange(keys.BATCH_LEASES, 0, -1, withscores=True)}
    try:
        consumers = client.xinfo_consumers(keys.STREAM, keys.GROUP)
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


def collect_queue_stats(client: redis.Redis) -> QueueStats:
    backlog = queue_backlog(client)
    rq_queue = Queue(BATCH_QUEUE, connection=client)
    return QueueStats(
        depth=backlog.depth,
        waiting=backlog.waiting,
        oldest_waiting_age_seconds=_oldest_waiting_age(client, backlog.now_ms),
        claimed_batches=_claimed_batches(client, backlog.now_ms),
        live_workers=len(Worker.all(connection=client, queue=rq_queue)),
        failed_jobs=FailedJobRegistry(queue=rq_queue).count,
        dead_letters=int(client.hlen(keys.DEAD_LETTERS)),
    )
