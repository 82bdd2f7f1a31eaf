"""Queue figures (``hitstream queue`` and /metrics) and the dispatcher that reads them."""

from __future__ import annotations

import time

import orjson
import redis
from click.testing import CliRunner
from rq import Queue

from hitstream.main import cli
from shared import keys
from shared.backlog import queue_backlog
from shared.keys import BATCH_QUEUE
from shared.lanes import Lane
from workers.dispatcher import Dispatcher, jobs_wanted
from workers.queue import BatchQueue
from workers.queue_stats import collect_queue_stats


def fill(client: redis.Redis, count: int) -> None:
    for _ in range(count):
        client.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: b"{}"})


def test_empty_redis_reports_zeroes(real_redis: redis.Redis) -> None:
    stats = collect_queue_stats(real_redis)

    for lane in stats.lanes.values():
        assert (lane.backlog.depth, lane.backlog.waiting, lane.claimed_batches) == (0, 0, [])
        assert lane.backlog.oldest_waiting_age_seconds is None
    assert (stats.live_workers, stats.failed_jobs, stats.dead_letters) == (0, 0, 0)


def test_claimed_and_waiting_entries_are_told_apart(real_redis: redis.Redis) -> None:
    fill(real_redis, 7)
    queue = BatchQueue(real_redis, claim_timeout_seconds=0.2)
    batch = queue.claim(batch_size=3)
    real_redis.hset(keys.DEAD_LETTERS, "1-0", b"{}")
    time.sleep(0.3)

    stats = collect_queue_stats(real_redis)
    live = stats.lanes[Lane.LIVE]

    assert (live.backlog.depth, live.backlog.waiting, stats.dead_letters) == (7, 4, 1)
    (claimed,) = live.claimed_batches
    assert (claimed.id, claimed.entries, claimed.lease_expired) == (batch.id, 3, True)
    assert claimed.age_seconds >= 0.3
    assert live.backlog.oldest_waiting_age_seconds >= 0.3
    assert queue_backlog(real_redis).expired_batches == 1


def test_queue_command_prints_json(real_redis: redis.Redis, hitstream_env: dict[str, str]) -> None:
    fill(real_redis, 2)

    result = CliRunner().invoke(cli, ["queue", "--json", "--rate-interval", "0"])

    assert result.exit_code == 0, result.output
    live = orjson.loads(result.stdout)["lanes"]["live"]
    assert (live["backlog"]["depth"], live["backlog"]["waiting"], live["claimed_batches"]) == (2, 2, [])


def test_jobs_wanted_covers_the_backlog_but_not_more_than_the_workers() -> None:
    assert jobs_wanted(waiting=0, expired_batches=0, batch_size=1000, live_workers=4) == 0
    assert jobs_wanted(waiting=1, expired_batches=0, batch_size=1000, live_workers=4) == 1
    assert jobs_wanted(waiting=2500, expired_batches=1, batch_size=1000, live_workers=8) == 4
    assert jobs_wanted(waiting=9000, expired_batches=0, batch_size=1000, live_workers=2) == 2


def test_dispatch_enqueues_once_per_tick_across_dispatchers(real_redis: redis.Redis) -> None:
    fill(real_redis, 1)
    rq_queue = Queue(BATCH_QUEUE, connection=real_redis)
    first = Dispatcher(real_redis, rq_queue, batch_size=1000)
    second = Dispatcher(real_redis, rq_queue, batch_size=1000)

    assert first.dispatch() == 1
    assert second.dispatch() == 0  # the other dispatcher holds this tick
    time.sleep(0.2)
    assert second.dispatch() == 0  # one job already waits for the one pageview
    assert rq_queue.count == 1
