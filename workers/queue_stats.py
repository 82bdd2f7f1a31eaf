"""Every figure ``hitstream queue`` prints: the lanes' backlog and the batches handed to the
store writer (``shared.backlog``) plus rates, the claimed batches and the RQ figures an
operator reads. Entries added minus depth is the number acknowledged: two counters per lane
whose rates are its inflow and outflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from shared import keys
from shared.backlog import EnrichedBacklog, LaneBacklog, queue_backlog
from shared.control.changes import text
from shared.keys import BATCH_QUEUE
from shared.lanes import LANE_KEYS, Lane


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    id: str
    entries: int
    age_seconds: float  # since the batch was (re-)claimed
    lease_expired: bool
    # Handed to the store writer (no lease: no worker holds it, nothing re-claims it).
    with_writer: bool


@dataclass(frozen=True, slots=True)
class LaneStats:
    backlog: LaneBacklog
    added_per_second: float | None  # over the sampling interval; None when not sampled
    acknowledged_per_second: float | None
    claimed_batches: list[ClaimedBatch]


@dataclass(frozen=True, slots=True)
class QueueStats:
    lanes: dict[Lane, LaneStats]
    enriched: EnrichedBacklog
    live_workers: int
    failed_jobs: int
    dead_letters: int


def _claimed_batches(client: redis.Redis, lane: Lane, now_ms: int) -> list[ClaimedBatch]:
    lane_keys = LANE_KEYS[lane]
    # One transaction, so a batch claimed or acknowledged in between cannot show without its lease.
    with client.pipeline(transaction=True) as pipe:
        pipe.zrange(lane_keys.leases, 0, -1, withscores=True)
        pipe.xinfo_consumers(lane_keys.stream, keys.GROUP)
        pairs, consumers = pipe.execute(raise_on_error=False)
    if isinstance(consumers, redis.ResponseError):  # no stream or group yet
        return []
    # redis-py types ZRANGE's reply alike for every option (members alone among them); WITHSCORES
    # makes it (member, score) pairs.
    leases = {text(member): score for member, score in cast(list[tuple[bytes | str, float]], pairs)}
    batches = []
    for consumer in consumers:
        if consumer["pending"]:
            lease = leases.get(consumer["name"].decode())
            batches.append(
                ClaimedBatch(
                    id=consumer["name"].decode(),
                    entries=consumer["pending"],
                    age_seconds=consumer["idle"] / 1000,
                    lease_expired=lease is not None and lease <= now_ms,
                    with_writer=lease is None,
                )
            )
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
        enriched=backlog.enriched,
        live_workers=len(Worker.all(connection=client, queue=rq_queue)),
        failed_jobs=FailedJobRegistry(queue=rq_queue).count,
        dead_letters=int(client.hlen(keys.DEAD_LETTERS)),
    )
