"""Queue figures (``hitstream queue`` and /metrics) and the dispatcher that reads them."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from hitstream.main import cli
from shared import keys
from shared.backlog import queue_backlog
from shared.config import Settings
from shared.keys import BATCH_QUEUE
from shared.lanes import LANE_KEYS, Lane
from tests.endpoint import client_for
from tests.procs import redis_clock_ms, wait_for_redis_clock, wait_until
from tests.traffic import queued_envelope
from tests.worker_context import worker_context_for
from workers.batch.delivery import PassToWriter
from workers.batch.enrichment import enrich
from workers.batch.queue import Batch, BatchQueue
from workers.batch.store_writer import StoreWriter
from workers.pipeline import Pipeline, build_pipeline
from workers.queue_stats import collect_queue_stats
from workers.runtime.dispatcher import Dispatcher, jobs_wanted
from workers.store.store import Store


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
    wait_for_redis_clock(real_redis, redis_clock_ms(real_redis) + 300)  # past the lease, 0.3 s old

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
    wait_until(lambda: not real_redis.exists(keys.DISPATCH_LOCK), 30, "the next tick")
    assert second.dispatch() == 0  # one job already waits for the one pageview
    assert rq_queue.count == 1


# --- batches enrichers handed to the store writer (workers.batch.delivery.PassToWriter) -----------

SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"
ENRICHED_METRICS = (
    "hitstream_enriched_batches",
    "hitstream_enriched_pageviews",
    "hitstream_enriched_oldest_age_seconds",
)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return build_pipeline(Settings())


def send(client: redis.Redis, lane: Lane, count: int) -> None:
    """``count`` pageviews into ``lane``, all at once (so a claim takes a full batch)."""
    with client.pipeline(transaction=True) as pipe:
        for n in range(count):
            envelope = queued_envelope(SITE, f"https://example.com/{n}", "198.51.100.23")
            pipe.xadd(LANE_KEYS[lane].stream, {keys.ENVELOPE_FIELD: envelope.to_json(), keys.TOKEN_FIELD: "sender"})
        pipe.execute()


def hand_off(client: redis.Redis, queue: BatchQueue, pipeline: Pipeline, batch_size: int) -> Batch:
    """What an enricher does with its next batch: claim, enrich, pass to the store writer."""
    batch = queue.claim(batch_size)
    assert batch is not None
    PassToWriter(client, threading.Event()).deliver(enrich(batch, pipeline))
    return batch


def queue_json() -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["queue", "--json", "--rate-interval", "0"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def enriched_metrics(redis_url: str, **settings: Any) -> dict[str, float]:
    """The API's /metrics figures of the batches waiting for the store writer."""
    with client_for(redis_url, **settings) as api:
        text = api.get("/metrics").text
    samples = {
        sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples
    }
    return {name: samples[name] for name in ENRICHED_METRICS}


def test_nothing_handed_to_the_writer_shows_zero_batches_even_with_batches_waiting_and_claimed(
    real_redis: redis.Redis, hitstream_env: dict[str, str], redis_url: str
) -> None:
    send(real_redis, Lane.LIVE, 5)
    BatchQueue(real_redis, claim_timeout_seconds=60).claim(batch_size=2)  # held by an enricher, leased

    figures = queue_json()

    assert figures["enriched"] == {"batches": 0, "pageviews": 0, "oldest_age_seconds": None}
    assert figures["lanes"]["live"]["backlog"]["waiting"] == 3
    assert [batch["with_writer"] for batch in figures["lanes"]["live"]["claimed_batches"]] == [False]
    assert enriched_metrics(redis_url) == dict.fromkeys(ENRICHED_METRICS, 0.0)


def test_batches_handed_to_the_writer_show_in_queue_and_metrics_with_their_pageviews_and_age(
    real_redis: redis.Redis, hitstream_env: dict[str, str], redis_url: str, pipeline: Pipeline
) -> None:
    send(real_redis, Lane.LIVE, 8)
    send(real_redis, Lane.BULK, 5)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60, bulk_min_share=0.0)  # live first
    handed = [hand_off(real_redis, queue, pipeline, batch_size) for batch_size in (3, 2)]
    held = queue.claim(batch_size=3)  # the live lane's last three: still the enricher's
    assert held is not None
    handed.append(hand_off(real_redis, queue, pipeline, batch_size=4))  # four of the bulk lane's five
    wait_for_redis_clock(real_redis, redis_clock_ms(real_redis) + 300)  # the oldest waited 0.3 s

    figures = queue_json()
    text = CliRunner().invoke(cli, ["queue", "--rate-interval", "0"]).stdout

    enriched = figures["enriched"]
    assert (enriched["batches"], enriched["pageviews"]) == (3, 9)
    assert 0.3 <= enriched["oldest_age_seconds"] < 30
    live, bulk = figures["lanes"]["live"], figures["lanes"]["bulk"]
    # Handed-off entries stay in their lane until the writer acknowledges them: not waiting.
    assert (live["backlog"]["depth"], live["backlog"]["waiting"]) == (8, 0)
    assert (bulk["backlog"]["depth"], bulk["backlog"]["waiting"]) == (5, 1)
    states = {
        batch["id"]: (batch["entries"], batch["with_writer"], batch["lease_expired"])
        for lane in (live, bulk)
        for batch in lane["claimed_batches"]
    }
    assert states == {
        handed[0].id: (3, True, False),
        handed[1].id: (2, True, False),
        handed[2].id: (4, True, False),
        held.id: (3, False, False),
    }
    assert "waiting for the store writer (enriched)\n  batches            3\n  pageviews          9\n" in text
    assert f"{handed[2].id}  4 entries" in text and "with the writer" in text
    metrics = enriched_metrics(redis_url)
    assert (metrics["hitstream_enriched_batches"], metrics["hitstream_enriched_pageviews"]) == (3.0, 9.0)
    assert 0.3 <= metrics["hitstream_enriched_oldest_age_seconds"] < 30


def test_the_figures_return_to_zero_once_the_writer_stored_the_batches(
    real_redis: redis.Redis, hitstream_env: dict[str, str], redis_url: str, pipeline: Pipeline, store: Store
) -> None:
    send(real_redis, Lane.LIVE, 6)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    for _ in range(3):
        hand_off(real_redis, queue, pipeline, batch_size=2)
    assert (queue_json()["enriched"]["batches"], queue_json()["enriched"]["pageviews"]) == (3, 6)

    context = worker_context_for(real_redis, store)
    writer = StoreWriter(real_redis, context.storing, context.shutdown_requested)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while real_redis.xlen(keys.STREAM) or real_redis.xlen(keys.ENRICHED_STREAM):
            assert time.monotonic() < deadline, "the writer did not store the batches"
            time.sleep(0.02)
    finally:
        writer.stopped.set()
        writer.join(10)

    figures = queue_json()
    assert figures["enriched"] == {"batches": 0, "pageviews": 0, "oldest_age_seconds": None}
    assert figures["lanes"]["live"]["backlog"]["acknowledged_total"] == 6
    assert figures["lanes"]["live"]["claimed_batches"] == []
    assert enriched_metrics(redis_url) == dict.fromkeys(ENRICHED_METRICS, 0.0)
    assert store.site_stats(SITE, None, None)["pageviews"] == 6


def test_metrics_show_the_writers_figures_as_unknown_when_redis_does_not_answer() -> None:
    metrics = enriched_metrics("redis://127.0.0.1:1/0", redis_timeout_ms=200)

    assert all(value != value for value in metrics.values()), metrics  # NaN: unknown, not 0
