"""The lanes' caps against Redis's maxmemory (shared.queue_caps): unset caps are derived from
it (exact figures from the formula), caps set explicitly are kept with one warning line when
they can outgrow it, no maxmemory leaves the defaults; and end to end, an API on a Redis with
a small maxmemory answers 503 at the derived caps, where caps set too high run into Redis's
OOM refusals instead (and the API and the worker said so at start)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import redis

from hitstream.redis_server import RedisServer
from ingest_api.openapi import BATCH_PATH
from shared import keys
from shared.config import Settings, load_settings
from shared.queue_caps import (
    BYTES_PER_QUEUED_PAGEVIEW,
    QUEUE_MEMORY_FRACTION,
    check_caps,
    derived_caps,
    effective_settings,
)
from shared.redis_safety import inspect_redis, safety_from_info
from tests.procs import Processes
from tests.traffic import ingest_token, pageview

MIB = 1 << 20
# Small enough to fill in a test; the derived caps for it: 4 MiB for the lanes at 1 KiB each.
SMALL_MAXMEMORY = 8 * MIB
SMALL_CAPS = (1365, 2730)


@pytest.mark.parametrize(
    ("maxmemory", "caps"),
    [
        (SMALL_MAXMEMORY, SMALL_CAPS),
        (100_000_000, (16_276, 32_552)),
        (1 << 30, (174_762, 349_525)),
        (4 << 30, (699_050, 1_398_101)),
        (6 << 30, (1_000_000, 2_000_000)),  # never above the defaults
        (64 << 30, (1_000_000, 2_000_000)),
        (1024, (1, 1)),  # room for nothing: one each, never 0
    ],
)
def test_unset_caps_are_derived_from_maxmemory(maxmemory: int, caps: tuple[int, int]) -> None:
    assert (BYTES_PER_QUEUED_PAGEVIEW, QUEUE_MEMORY_FRACTION) == (1024, 0.5)  # the figures the numbers assume
    assert derived_caps(maxmemory) == caps
    settings = effective_settings(load_settings({}), maxmemory)
    assert (settings.queue_max_depth, settings.bulk_queue_max_depth) == caps
    if caps[0] < 1_000_000 and caps != (1, 1):
        assert sum(caps) * BYTES_PER_QUEUED_PAGEVIEW <= maxmemory * QUEUE_MEMORY_FRACTION


@pytest.mark.parametrize(
    ("environment", "caps"),
    [
        ({"HITSTREAM_QUEUE_MAX_DEPTH": "500"}, (500, SMALL_CAPS[1])),
        ({"HITSTREAM_BULK_QUEUE_MAX_DEPTH": "700"}, (SMALL_CAPS[0], 700)),
        ({"HITSTREAM_QUEUE_MAX_DEPTH": "1000000", "HITSTREAM_BULK_QUEUE_MAX_DEPTH": "2000000"}, (1_000_000, 2_000_000)),
        ({"HITSTREAM_QUEUE_MAX_DEPTH": " "}, SMALL_CAPS),  # blank is unset, as for every variable
    ],
    ids=["live set", "bulk set", "both set to the defaults", "live blank"],
)
def test_caps_set_explicitly_are_kept(environment: dict[str, str], caps: tuple[int, int]) -> None:
    settings = effective_settings(load_settings(environment), SMALL_MAXMEMORY)
    assert (settings.queue_max_depth, settings.bulk_queue_max_depth) == caps


def test_caps_set_above_maxmemory_are_kept_with_one_warning_naming_them(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"HITSTREAM_QUEUE_MAX_DEPTH": "1000000"})
    with caplog.at_level(logging.WARNING, logger="shared.queue_caps"):
        capped = check_caps(settings, SMALL_MAXMEMORY)
    assert (capped.queue_max_depth, capped.bulk_queue_max_depth) == (1_000_000, SMALL_CAPS[1])
    assert [record.getMessage() for record in caplog.records] == [
        "the lane caps HITSTREAM_QUEUE_MAX_DEPTH=1000000 (set), HITSTREAM_BULK_QUEUE_MAX_DEPTH=2730 (derived) let "
        "1,002,730 pageviews queue, ~979 MiB at ~1024 bytes each, more than Redis's maxmemory (8 MiB): Redis would "
        "refuse writes before the lanes answer 503; lower them (unset, they would be 1365 and 2730) or raise maxmemory"
    ]


@pytest.mark.parametrize(
    "environment",
    [{}, {"HITSTREAM_QUEUE_MAX_DEPTH": "3000", "HITSTREAM_BULK_QUEUE_MAX_DEPTH": "5000"}],
    ids=["derived", "set, within maxmemory"],
)
def test_caps_that_fit_maxmemory_bring_no_warning(
    caplog: pytest.LogCaptureFixture, environment: dict[str, str]
) -> None:
    # 8,000 pageviews at 1 KiB: ~7.8 MiB, within the 8 MiB (though above the derived half).
    with caplog.at_level(logging.WARNING, logger="shared.queue_caps"):
        check_caps(load_settings(environment), SMALL_MAXMEMORY)
    assert caplog.records == []


@pytest.mark.parametrize("maxmemory", [0, None], ids=["no limit", "not reported"])
@pytest.mark.parametrize(
    "environment", [{}, {"HITSTREAM_QUEUE_MAX_DEPTH": "100000000"}], ids=["caps unset", "caps set"]
)
def test_without_maxmemory_the_caps_stay_as_configured_and_nothing_is_said(
    caplog: pytest.LogCaptureFixture, maxmemory: int | None, environment: dict[str, str]
) -> None:
    settings = load_settings(environment)
    with caplog.at_level(logging.WARNING, logger="shared.queue_caps"):
        assert check_caps(settings, maxmemory) == settings
    assert caplog.records == []
    assert load_settings({}).queue_max_depth == 1_000_000
    assert load_settings({}).bulk_queue_max_depth == 2_000_000


def test_settings_name_the_variables_the_environment_set() -> None:
    assert load_settings({}).variables_set == frozenset()
    assert Settings().variables_set == frozenset()
    settings = load_settings(
        {"HITSTREAM_QUEUE_MAX_DEPTH": "10", "HITSTREAM_LOG_LEVEL": "debug", "HITSTREAM_RATE_BURST": ""}
    )
    assert settings.variables_set == {"HITSTREAM_QUEUE_MAX_DEPTH", "HITSTREAM_LOG_LEVEL"}


def test_maxmemory_is_read_from_info_memory(own_redis: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis.url)
    assert inspect_redis(client).maxmemory == 0
    client.config_set("maxmemory", SMALL_MAXMEMORY)
    assert inspect_redis(client).maxmemory == SMALL_MAXMEMORY
    client.close()
    assert safety_from_info({}, {}).maxmemory is None  # INFO disabled: not reported


# --- end to end ---------------------------------------------------------------------------


@pytest.fixture
def small_redis(own_redis: RedisServer) -> redis.Redis:
    """This test's own Redis with a maxmemory of SMALL_MAXMEMORY (noeviction, the default)."""
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory", SMALL_MAXMEMORY)
    return client


def post_batches(url: str, secret: str, host: str, items: int, per_batch: int) -> list[int]:
    """``items`` pageviews to ``host`` in batches of ``per_batch``, until the first answer that
    is not 202; the statuses answered."""
    statuses = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as client:
        for start in range(0, items, per_batch):
            bodies = [pageview(number, host)[1] for number in range(start, start + per_batch)]
            answer = client.post(BATCH_PATH, content=b"[" + b",".join(bodies) + b"]")
            statuses.append(answer.status_code)
            if answer.status_code != 202:
                assert answer.headers["Retry-After"], "a 503 says when to retry"
                break
    return statuses


def oom_refusals(client: redis.Redis) -> int:
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_an_api_on_a_redis_with_a_small_maxmemory_answers_503_at_the_derived_caps(
    processes: Processes, small_redis: redis.Redis, own_redis: RedisServer
) -> None:
    live_secret = ingest_token(small_redis, "live.example")
    bulk_secret = ingest_token(small_redis, "bulk.example", bulk=True)
    api = processes.api(HITSTREAM_REDIS_URL=own_redis.url, HITSTREAM_TOKEN_QUEUE_SHARE="1")
    live, bulk = SMALL_CAPS
    # Batches that fill each lane exactly (1365 = 91 x 15, 2730 = 273 x 10), then one more.
    assert post_batches(api.url, live_secret, "live.example", live + 15, 15) == [202] * 91 + [503]
    assert post_batches(api.url, bulk_secret, "bulk.example", bulk + 10, 10) == [202] * 273 + [503]
    assert small_redis.xlen(keys.STREAM) == live
    assert small_redis.xlen(keys.BULK_STREAM) == bulk
    assert oom_refusals(small_redis) == 0
    assert small_redis.info("memory")["used_memory"] < SMALL_MAXMEMORY
    assert f"lane caps derived from Redis's maxmemory (8,388,608 bytes): live {live:,}, bulk {bulk:,}" in api.output()


def test_caps_set_above_a_small_maxmemory_are_warned_about_and_run_into_redis_oom(
    processes: Processes, small_redis: redis.Redis, own_redis: RedisServer, tmp_path: Path
) -> None:
    secret = ingest_token(small_redis, "live.example")
    settings = {
        "HITSTREAM_REDIS_URL": own_redis.url,
        "HITSTREAM_TOKEN_QUEUE_SHARE": "1",
        "HITSTREAM_QUEUE_MAX_DEPTH": "1000000",
    }
    api = processes.api(**settings)
    worker = processes.worker(tmp_path / "store", **settings)
    worker.wait_ready(small_redis)
    worker.stop()
    warning = "the lane caps HITSTREAM_QUEUE_MAX_DEPTH=1000000 (set), HITSTREAM_BULK_QUEUE_MAX_DEPTH=2730 (derived)"
    for process in (api, worker):
        assert [line for line in process.output().splitlines() if warning in line] == [
            warning + " let 1,002,730 pageviews queue, ~979 MiB at ~1024 bytes each, more than Redis's maxmemory "
            "(8 MiB): Redis would refuse writes before the lanes answer 503; lower them (unset, they would be 1365 "
            "and 2730) or raise maxmemory"
        ]
    statuses = post_batches(api.url, secret, "live.example", 1_000_000, 100)
    assert statuses[-1] == 503
    # The lane was far from its cap: Redis refused the write (out of memory), not the cap.
    assert small_redis.xlen(keys.STREAM) < 1_000_000
    assert oom_refusals(small_redis) >= 1
