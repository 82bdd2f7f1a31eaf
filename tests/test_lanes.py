"""The live and bulk lanes in-process, on the suite's real Redis: which lane a request lands in,
who may ask for which lane, each lane's cap and each token's share of it (503 to that lane or
token only), the order in which workers claim, and the figures operators see per lane."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient

from hitstream.main import cli
from ingest_api.errors import TOKEN_SHARE_FULL
from ingest_api.intake import BAD_LANE, BULK_TOKEN_IN_LIVE, LIVE_TOKEN_IN_BULK
from shared import keys
from shared.backlog import queue_backlog
from shared.config import ConfigError, load_settings
from shared.control.tokens import list_tokens, token_key
from shared.envelope import Envelope
from shared.lanes import LANE_HEADER, LANE_KEYS, Lane
from tests.endpoint import BODY, assert_error, client_for
from tests.procs import wait_for_redis_clock, wait_until
from tests.traffic import ingest_token
from workers.batch import dead_letters
from workers.batch.queue import BatchQueue
from workers.queue_stats import collect_queue_stats

PAGEVIEW = "/api/ingest/server/pageview"
EVENT = "/api/ingest/server/event"
BATCH = "/api/ingest/server/pageviews"


def page(number: int) -> dict[str, Any]:
    return {**BODY, "url": f"https://example.com/page/{number}"}


def post(api: TestClient, path: str, secret: str, numbers: range, **headers: str) -> Any:
    """One request to ``path``: a batch of the numbered pages, or the first one alone."""
    headers["Authorization"] = f"Bearer {secret}"
    if path == BATCH:
        return api.post(path, json=[page(n) for n in numbers], headers=headers)
    body = page(numbers[0]) if path == PAGEVIEW else {**page(numbers[0]), "name": "signup"}
    return api.post(path, json=body, headers=headers)


def queued_urls(client: redis.Redis, lane: Lane) -> list[str]:
    return [Envelope.from_json(fields[b"e"]).url for _, fields in client.xrange(LANE_KEYS[lane].stream)]


def queued_by_token(client: redis.Redis, lane: Lane) -> dict[str, int]:
    return {token.decode(): int(count) for token, count in client.hgetall(LANE_KEYS[lane].queued_by_token).items()}


def token_id(client: redis.Redis, secret: str) -> str:
    return client.hget(token_key(secret), "id").decode()


# --- which lane ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PAGEVIEW, EVENT, BATCH])
@pytest.mark.parametrize("asked", [{}, {LANE_HEADER: "bulk"}, {LANE_HEADER: " BULK "}])
def test_a_bulk_tokens_pageviews_land_in_the_bulk_lane_only(
    redis_url: str, real_redis: redis.Redis, path: str, asked: dict[str, str]
) -> None:
    secret = ingest_token(real_redis, bulk=True)
    with client_for(redis_url) as api:
        assert post(api, path, secret, range(2), **asked).status_code == 202

    expected = 2 if path == BATCH else 1
    assert queued_urls(real_redis, Lane.LIVE) == []
    assert len(queued_urls(real_redis, Lane.BULK)) == expected
    assert queued_by_token(real_redis, Lane.BULK) == {token_id(real_redis, secret): expected}


@pytest.mark.parametrize("path", [PAGEVIEW, EVENT, BATCH])
def test_a_live_tokens_pageviews_land_in_the_live_lane_with_or_without_the_header(
    redis_url: str, real_redis: redis.Redis, path: str
) -> None:
    secret = ingest_token(real_redis)
    with client_for(redis_url) as api:
        assert post(api, path, secret, range(1)).status_code == 202
        assert post(api, path, secret, range(1, 2), **{LANE_HEADER: "live"}).status_code == 202

    assert len(queued_urls(real_redis, Lane.LIVE)) == 2
    assert queued_urls(real_redis, Lane.BULK) == []


@pytest.mark.parametrize("path", [PAGEVIEW, EVENT, BATCH])
@pytest.mark.parametrize(
    ("bulk_token", "asked", "status", "message"),
    [
        (False, "bulk", 403, LIVE_TOKEN_IN_BULK),
        (True, "live", 403, BULK_TOKEN_IN_LIVE),
        (False, "fast", 400, BAD_LANE),
        (True, "", 400, BAD_LANE),
    ],
)
def test_a_lane_that_is_not_the_tokens_own_is_refused_naming_the_header(
    redis_url: str, real_redis: redis.Redis, path: str, bulk_token: bool, asked: str, status: int, message: str
) -> None:
    secret = ingest_token(real_redis, bulk=bulk_token)
    with client_for(redis_url) as api:
        refused = post(api, path, secret, range(3), **{LANE_HEADER: asked})

    assert_error(refused, status, message)
    assert LANE_HEADER in message
    assert queued_urls(real_redis, Lane.LIVE) == queued_urls(real_redis, Lane.BULK) == []


# --- caps and shares ----------------------------------------------------------------------


@pytest.mark.parametrize("full", [Lane.LIVE, Lane.BULK])
@pytest.mark.parametrize("path", [PAGEVIEW, BATCH])
def test_a_full_lane_answers_503_with_retry_after_to_its_own_requests_only(
    redis_url: str, real_redis: redis.Redis, full: Lane, path: str
) -> None:
    secrets = {Lane.LIVE: ingest_token(real_redis), Lane.BULK: ingest_token(real_redis, bulk=True)}
    other = Lane.BULK if full is Lane.LIVE else Lane.LIVE
    caps = {"queue_max_depth": 4, "bulk_queue_max_depth": 4, "token_queue_share": 1.0}
    with client_for(redis_url, **caps) as api:
        filled = [post(api, path, secrets[full], range(n, n + 1)).status_code for n in range(4)]
        refused = post(api, path, secrets[full], range(10, 11))
        admitted = [post(api, path, secrets[other], range(n, n + 1)).status_code for n in range(20, 24)]

    assert filled == admitted == [202] * 4
    assert_error(refused, 503, "Service not available")
    assert refused.headers["Retry-After"] == "1"
    assert len(queued_urls(real_redis, full)) == len(queued_urls(real_redis, other)) == 4


@pytest.mark.parametrize("lane", [Lane.LIVE, Lane.BULK])
def test_a_tokens_full_share_refuses_that_token_only_and_other_tokens_still_get_in(
    redis_url: str, real_redis: redis.Redis, lane: Lane
) -> None:
    bulk = lane is Lane.BULK
    first, second, third = (ingest_token(real_redis, bulk=bulk) for _ in range(3))
    # A share of 0.3 of 10 entries: 3 per token, so three tokens fit side by side.
    caps = {"queue_max_depth": 10, "bulk_queue_max_depth": 10, "token_queue_share": 0.3}
    with client_for(redis_url, **caps) as api:
        assert post(api, BATCH, first, range(3)).status_code == 202
        over_share = post(api, BATCH, first, range(3, 4))
        single_over_share = post(api, PAGEVIEW, first, range(4, 5))
        too_large = post(api, BATCH, second, range(10, 14))  # all or nothing: 4 > 3
        others = [post(api, BATCH, secret, range(20, 23)).status_code for secret in (second, third)]

    for refusal in (over_share, single_over_share, too_large):
        assert_error(refusal, 503, TOKEN_SHARE_FULL)
        assert refusal.headers["Retry-After"] == "1"
    assert others == [202, 202]
    assert sorted(queued_by_token(real_redis, lane).values()) == [3, 3, 3]


def test_a_tokens_share_frees_up_exactly_as_its_entries_are_acknowledged(
    redis_url: str, real_redis: redis.Redis
) -> None:
    secret = ingest_token(real_redis, bulk=True)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    caps = {"bulk_queue_max_depth": 10, "token_queue_share": 0.5}
    with client_for(redis_url, **caps) as api:
        assert post(api, BATCH, secret, range(5)).status_code == 202
        assert post(api, PAGEVIEW, secret, range(5, 6)).status_code == 503
        batch = queue.claim(batch_size=2)
        assert batch is not None and batch.lane is Lane.BULK
        queue.ack(batch)
        queue.ack(batch)  # a doubled acknowledgement deletes nothing more, counts nothing more
        assert queued_by_token(real_redis, Lane.BULK) == {token_id(real_redis, secret): 3}
        assert post(api, BATCH, secret, range(6, 8)).status_code == 202
        assert post(api, PAGEVIEW, secret, range(8, 9)).status_code == 503
        while (batch := queue.claim(batch_size=3)) is not None:
            queue.ack(batch)

    assert queued_by_token(real_redis, Lane.BULK) == {}  # a token with nothing queued leaves no field
    assert real_redis.xlen(keys.BULK_STREAM) == 0


# --- claim order ----------------------------------------------------------------------------


def fill(client: redis.Redis, lane: Lane, count: int, token: str = "t1") -> list[str]:
    stream = LANE_KEYS[lane].stream
    return [client.xadd(stream, {keys.ENVELOPE_FIELD: b"{}", keys.TOKEN_FIELD: token}).decode() for _ in range(count)]


def claimed_lanes(queue: BatchQueue, claims: int) -> list[str]:
    lanes = []
    for _ in range(claims):
        batch = queue.claim(batch_size=1)
        lanes.append("-" if batch is None else batch.lane.value)
        if batch is not None:
            queue.ack(batch)
    return lanes


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (0.25, ["live", "live", "live", "bulk"] * 2),
        (0.5, ["live", "bulk"] * 4),
        (1.0, ["bulk"] * 8),
    ],
)
def test_workers_claim_live_first_and_give_bulk_its_minimum_share(
    real_redis: redis.Redis, share: float, expected: list[str]
) -> None:
    fill(real_redis, Lane.LIVE, 20)
    fill(real_redis, Lane.BULK, 20)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60, bulk_min_share=share)

    assert claimed_lanes(queue, 8) == expected


def test_a_lane_alone_gets_every_claim_and_an_empty_queue_none(real_redis: redis.Redis) -> None:
    queue = BatchQueue(real_redis, claim_timeout_seconds=60, bulk_min_share=0.1)
    fill(real_redis, Lane.BULK, 3)
    assert claimed_lanes(queue, 4) == ["bulk", "bulk", "bulk", "-"]
    fill(real_redis, Lane.LIVE, 2)
    assert claimed_lanes(queue, 3) == ["live", "live", "-"]
    fill(real_redis, Lane.BULK, 1)
    fill(real_redis, Lane.LIVE, 1)
    assert claimed_lanes(queue, 3) == ["live", "bulk", "-"]


def test_a_partial_live_batch_says_a_bulk_backlog_still_waits_so_the_job_keeps_chaining(
    real_redis: redis.Redis,
) -> None:
    fill(real_redis, Lane.LIVE, 2)
    fill(real_redis, Lane.BULK, 3)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60, bulk_min_share=0.1)

    claims = [queue.claim(batch_size=5) for _ in range(3)]

    assert [(batch.lane, len(batch.entries), batch.more_waiting) for batch in claims if batch] == [
        (Lane.LIVE, 2, True),
        (Lane.BULK, 3, False),
    ]
    assert claims[2] is None


@pytest.mark.parametrize("lane", [Lane.LIVE, Lane.BULK])
def test_an_expired_batch_is_reclaimed_whole_in_its_own_lane_before_anything_new(
    real_redis: redis.Redis, lane: Lane
) -> None:
    ids = fill(real_redis, lane, 4, token="owner")
    queue = BatchQueue(real_redis, claim_timeout_seconds=0.3)
    lost = queue.claim(batch_size=3)  # its worker "dies": no heartbeat, no ack
    assert lost is not None and lost.lane is lane
    fill(real_redis, Lane.LIVE, 2)
    wait_until(lambda: queue_backlog(real_redis).expired_batches == 1, 10, "the lost batch's lease to expire")

    again = queue.claim(batch_size=10)

    assert again is not None and again.reclaimed
    assert (again.id, [entry.id for entry in again.entries]) == (lost.id, ids[:3])
    assert {entry.token_id for entry in again.entries} == {"owner"}
    queue.ack(again)
    left = {entry_id.decode() for entry_id, _ in real_redis.xrange(LANE_KEYS[lane].stream)}
    assert ids[3] in left and not left & set(ids[:3])
    assert real_redis.zcard(LANE_KEYS[lane].leases) == 0


def test_heartbeat_and_release_reach_the_leases_of_both_lanes(real_redis: redis.Redis) -> None:
    fill(real_redis, Lane.LIVE, 1)
    fill(real_redis, Lane.BULK, 1)
    queue = BatchQueue(real_redis, claim_timeout_seconds=0.2, bulk_min_share=0.1)
    live, bulk = queue.claim(batch_size=1), queue.claim(batch_size=1)
    assert live is not None and bulk is not None and (live.lane, bulk.lane) == (Lane.LIVE, Lane.BULK)
    wait_until(lambda: queue_backlog(real_redis).expired_batches == 2, 10, "both leases to expire")

    # Renewed one claim timeout ahead: a minute, so no clock reading can race the check.
    BatchQueue(real_redis, claim_timeout_seconds=60).heartbeat(live.id, bulk.id)
    assert queue_backlog(real_redis).expired_batches == 0
    queue.release(live.id, bulk.id)
    assert queue_backlog(real_redis).expired_batches == 2


def test_a_dead_letter_is_requeued_to_the_lane_it_came_from(real_redis: redis.Redis) -> None:
    for lane in Lane:
        batch_id = f"{LANE_KEYS[lane].batch_prefix}0"
        letter = dead_letters.for_undecodable("1-0", batch_id, b'{"url": "' + lane.encode() + b'"}', "bad")
        with real_redis.pipeline() as pipe:
            dead_letters.record(pipe, [letter])
            pipe.execute()

    # The two streams make their ids independently: equal ids keep a dead letter each.
    assert sorted(dead_letters.requeue(real_redis, None)) == ["1-0", "bulk:1-0"]
    for lane in Lane:
        ((_, fields),) = real_redis.xrange(LANE_KEYS[lane].stream)
        assert orjson.loads(fields[b"e"])["url"] == lane


# --- what operators see -------------------------------------------------------------------


def test_queue_figures_are_kept_per_lane(real_redis: redis.Redis) -> None:
    fill(real_redis, Lane.BULK, 5)
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    claimed = queue.claim(batch_size=2)
    assert claimed is not None
    queue.ack(claimed)
    (live_id,) = fill(real_redis, Lane.LIVE, 1)
    wait_for_redis_clock(real_redis, int(live_id.split("-")[0]) + 200)  # both lanes' oldest: 0.2 s old

    stats = collect_queue_stats(real_redis, rate_seconds=0.3)
    live, bulk = stats.lanes[Lane.LIVE], stats.lanes[Lane.BULK]

    assert (live.backlog.depth, live.backlog.waiting, live.backlog.added_total, live.backlog.acknowledged_total) == (
        1,
        1,
        1,
        0,
    )
    assert (bulk.backlog.depth, bulk.backlog.waiting, bulk.backlog.added_total, bulk.backlog.acknowledged_total) == (
        3,
        3,
        5,
        2,
    )
    assert live.backlog.oldest_waiting_age_seconds >= 0.2 and bulk.backlog.oldest_waiting_age_seconds >= 0.2
    assert live.added_per_second == bulk.acknowledged_per_second == 0.0


def test_queue_rates_count_what_was_added_and_acknowledged_in_the_interval(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = BatchQueue(real_redis, claim_timeout_seconds=60)
    fill(real_redis, Lane.BULK, 10)
    sleep = time.sleep

    def work_while_sampling(seconds: float) -> None:  # between the two samples of the rates
        fill(real_redis, Lane.BULK, 30)
        batch = queue.claim(batch_size=20)
        assert batch is not None
        queue.ack(batch)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", work_while_sampling)
    stats = collect_queue_stats(real_redis, rate_seconds=0.3)
    bulk, live = stats.lanes[Lane.BULK], stats.lanes[Lane.LIVE]

    # 30 added and 20 acknowledged in an interval of at least 0.3 s (Redis's own clock).
    assert 0 < bulk.added_per_second <= 30 / 0.3
    assert bulk.added_per_second / bulk.acknowledged_per_second == pytest.approx(30 / 20)
    assert live.added_per_second == live.acknowledged_per_second == 0.0


def test_the_queue_command_prints_each_lane(real_redis: redis.Redis, hitstream_env: dict[str, str]) -> None:
    fill(real_redis, Lane.BULK, 2)

    as_json = CliRunner().invoke(cli, ["queue", "--json", "--rate-interval", "0"])
    as_text = CliRunner().invoke(cli, ["queue", "--rate-interval", "0.1"])

    assert as_json.exit_code == as_text.exit_code == 0, as_json.output + as_text.output
    lanes = orjson.loads(as_json.stdout)["lanes"]
    assert (lanes["bulk"]["backlog"]["depth"], lanes["live"]["backlog"]["depth"]) == (2, 0)
    assert lanes["bulk"]["added_per_second"] is None
    assert "live lane" in as_text.stdout and "bulk lane" in as_text.stdout
    assert "added/s            0.0" in as_text.stdout


def test_metrics_show_depth_waiting_age_and_counters_per_lane(redis_url: str, real_redis: redis.Redis) -> None:
    bulk_secret = ingest_token(real_redis, bulk=True)
    with client_for(redis_url) as api:
        assert post(api, BATCH, bulk_secret, range(3)).status_code == 202
        text = api.get("/metrics").text

    for line in (
        'hitstream_queue_depth{lane="live"} 0.0',
        'hitstream_queue_depth{lane="bulk"} 3.0',
        'hitstream_queue_waiting{lane="bulk"} 3.0',
        'hitstream_queue_added_total{lane="bulk"} 3.0',
        'hitstream_queue_acknowledged_total{lane="bulk"} 0.0',
        'hitstream_queue_oldest_waiting_age_seconds{lane="live"} 0.0',
    ):
        assert line in text, line


def test_metrics_show_unknown_lanes_when_redis_does_not_answer(real_redis: redis.Redis) -> None:
    with client_for("redis://127.0.0.1:1/0", redis_timeout_ms=200) as api:
        text = api.get("/metrics").text

    assert 'hitstream_queue_depth{lane="live"} NaN' in text
    assert 'hitstream_queue_waiting{lane="bulk"} NaN' in text


# --- tokens and settings --------------------------------------------------------------------


def test_tokens_create_bulk_makes_a_bulk_token_and_list_shows_each_lane(
    real_redis: redis.Redis, hitstream_env: dict[str, str]
) -> None:
    run: Callable[..., Any] = lambda *arguments: CliRunner().invoke(cli, list(arguments))  # noqa: E731
    assert run("sites", "add", "example.com").exit_code == 0
    bulk = run("tokens", "create", "--site", "example.com", "--role", "owner", "--name", "replay", "--bulk")
    live = run("tokens", "create", "--site", "example.com", "--role", "owner", "--name", "backend")
    listed = run("tokens", "list").stdout

    assert bulk.exit_code == live.exit_code == 0
    assert "lane bulk" in bulk.stdout and "lane live" in live.stdout
    assert {token.name: token.bulk for token in list_tokens(real_redis)} == {"replay": True, "backend": False}
    rows = {line.split()[1]: line.split() for line in listed.splitlines()[1:]}
    assert "bulk" in rows["replay"] and "live" in rows["backend"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HITSTREAM_BULK_QUEUE_MAX_DEPTH", "0"),
        ("HITSTREAM_TOKEN_QUEUE_SHARE", "0"),
        ("HITSTREAM_TOKEN_QUEUE_SHARE", "1.5"),
        ("HITSTREAM_BULK_MIN_SHARE", "-0.1"),
        ("HITSTREAM_BULK_MIN_SHARE", "nan"),
    ],
)
def test_a_bad_lane_setting_stops_start_up_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: value})


def test_lane_settings_are_read() -> None:
    settings = load_settings(
        {
            "HITSTREAM_BULK_QUEUE_MAX_DEPTH": "5000000",
            "HITSTREAM_TOKEN_QUEUE_SHARE": "0.5",
            "HITSTREAM_BULK_MIN_SHARE": "1",
        }
    )
    assert (settings.bulk_queue_max_depth, settings.token_queue_share, settings.bulk_min_share) == (5_000_000, 0.5, 1.0)
