"""Acceptance of the lanes with real processes (``hitstream api``, ``hitstream worker`` and
``hitstream replay``): a replay flooding the bulk lane to its cap neither refuses nor delays
live traffic, two replays of different tokens progress side by side with room for a third,
a live token cannot replay, and every pageview is stored exactly once in the end.

Each claim is checked on a state that stays put while the test looks, never on samples whose
timing decides what they see (on two shared cores, replays finished between two samples):
no worker runs while the floods fill the lane, so nothing leaves it and the depth, each
token's count and the refusals hold until the test starts the worker; the order in which the
worker then acknowledges the lanes' batches is Redis's own record, published in order.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ingest_api.errors import SERVICE_NOT_AVAILABLE, TOKEN_SHARE_FULL
from ingest_api.intake import LIVE_TOKEN_IN_BULK
from ingest_api.openapi import BATCH_PATH, PAGEVIEW_PATH
from shared.control.tokens import token_key
from shared.lanes import LANE_KEYS, LANES, Lane
from tests.procs import HITSTREAM, Processes, drained, stored_pages, wait_until
from tests.traffic import ingest_token, pageview

# Lines per replay request: the lane's cap and the shares below are multiples of it, so a
# flood fills them exactly.
REPLAY_BATCH = 500
BULK_CAP = 10_000
LIVE_PAGEVIEWS = 20
# A share of 0.4 of 5,000: 2,000 entries per token, so two floods at their share leave room
# for a third token.
SHARED_CAP = 5_000
SHARE = 0.4
SHARE_ENTRIES = 2_000
FLOOD_LINES = 3 * SHARE_ENTRIES
# The API's log line for a flood refused because its lane is full (ingest_api.front, .intake).
LANE_FULL_LOGGED = f"{BATCH_PATH} answered 503: the request's lane is at its maximum depth"
# The API's log line for any 503 on the batch endpoint (ingest_api.front).
BATCH_503_LOGGED = f"POST {BATCH_PATH} 503 "
# A plain 503: Redis answered slower than the API's timeout (a loaded machine), or not at all.
OVERLOADED = {"message": SERVICE_NOT_AVAILABLE}


def replay_file(path: Path, first: int, lines: int) -> list[str]:
    """NDJSON pageviews, each with its own page_id; returns the page_ids."""
    pages = [pageview(number) for number in range(first, first + lines)]
    path.write_bytes(b"\n".join(body for _, body in pages) + b"\n")
    return [page_id for page_id, _ in pages]


class Replays:
    """``hitstream replay`` processes of one test; any still running at its end are killed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen[str]] = []

    def start(self, path: Path, url: str, secret: str) -> subprocess.Popen[str]:
        command = [HITSTREAM, "replay", str(path), "--url", url, "--quiet", "--endpoint", "batch"]
        command += ["--concurrency", "8", "--batch-size", str(REPLAY_BATCH)]
        replay = subprocess.Popen(
            command,
            env={**self.env, "HITSTREAM_TOKEN": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(replay)
        return replay

    def kill_all(self) -> None:
        for replay in self.started:
            replay.kill()
            replay.communicate()


@pytest.fixture
def replays(hitstream_env: dict[str, str]) -> Iterator[Replays]:
    started = Replays(hitstream_env)
    yield started
    started.kill_all()


def finished(replay: subprocess.Popen[str], timeout: float = 180) -> str:
    stdout, stderr = replay.communicate(timeout=timeout)
    assert replay.returncode == 0, stderr
    return stdout


class Acknowledgements:
    """The lane of each batch a worker acknowledges, in Redis's order: an acknowledgement
    removes the batch's lease from its lane's lease set (workers.batch.queue), and Redis publishes
    every removal as a keyspace event, in the order it made them, to this subscriber."""

    def __init__(self, client: redis.Redis) -> None:
        database = client.connection_pool.connection_kwargs.get("db", 0)
        self._lane_of = {f"__keyspace@{database}__:{LANE_KEYS[lane].leases}".encode(): lane for lane in LANES}
        self._events = client.pubsub()
        self._events.subscribe(*self._lane_of)
        self.lanes: list[Lane] = []
        confirmed = 0
        while confirmed < len(self._lane_of):  # subscribed before any worker can acknowledge
            message = self._events.get_message(timeout=10)
            assert message is not None, "Redis did not confirm the subscription"
            confirmed += message["type"] == "subscribe"

    def up_to_the_first(self, lane: Lane, timeout: float = 120) -> list[Lane]:
        """The lanes of the batches acknowledged until (and with) the first one of ``lane``."""

        def seen() -> bool:
            while (message := self._events.get_message()) is not None:
                if message["type"] == "message" and message["data"] == b"zrem":
                    self.lanes.append(self._lane_of[message["channel"]])
            return lane in self.lanes

        wait_until(seen, timeout, f"a batch of the {lane} lane to be acknowledged")
        return self.lanes[: self.lanes.index(lane) + 1]

    def close(self) -> None:
        self._events.close()


@pytest.fixture
def acknowledgements(real_redis: redis.Redis) -> Iterator[Acknowledgements]:
    """Keyspace events of sorted sets on (for the lease sets), back to as they were after."""
    before = real_redis.config_get("notify-keyspace-events")["notify-keyspace-events"]
    real_redis.config_set("notify-keyspace-events", "Kz")
    subscriber = Acknowledgements(real_redis)
    yield subscriber
    subscriber.close()
    real_redis.config_set("notify-keyspace-events", before)


def post_until_decided(url: str, secret: str, body: bytes, attempts: int = 10) -> list[httpx.Response]:
    """Post one pageview again while the API answers a plain 503 (Redis slower than its
    timeout), as any client does; returns every answer. A refusal that lasts (a full lane or
    share while no worker runs) is still the last answer."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    answers: list[httpx.Response] = []
    while not answers or (len(answers) < attempts and overloaded(answers[-1])):
        answers.append(httpx.post(f"{url}{PAGEVIEW_PATH}", content=body, headers=headers, timeout=10))
    return answers


def overloaded(answer: httpx.Response) -> bool:
    return answer.status_code == 503 and answer.json() == OVERLOADED


def queued_by_token(client: redis.Redis) -> dict[str, int]:
    counts = client.hgetall(LANE_KEYS[Lane.BULK].queued_by_token)
    return {token.decode(): int(count) for token, count in counts.items()}


def token_id(client: redis.Redis, secret: str) -> str:
    return client.hget(token_key(secret), "id").decode()


def test_a_replay_flooding_the_bulk_lane_to_its_cap_neither_refuses_nor_delays_live_traffic(
    processes: Processes,
    replays: Replays,
    acknowledgements: Acknowledgements,
    real_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    api = processes.api(HITSTREAM_BULK_QUEUE_MAX_DEPTH=str(BULK_CAP), HITSTREAM_TOKEN_QUEUE_SHARE="1")
    live_secret, bulk_secret = ingest_token(real_redis), ingest_token(real_redis, bulk=True)
    replayed = replay_file(tmp_path / "history.ndjson", 0, 2 * BULK_CAP)
    lanes = {lane: LANE_KEYS[lane].stream for lane in LANES}

    replay = replays.start(tmp_path / "history.ndjson", api.url, bulk_secret)
    # No worker yet, so nothing leaves the lane: the flood fills it to its cap, is refused
    # there, and the lane stays full while live pageviews come in.
    wait_until(lambda: real_redis.xlen(lanes[Lane.BULK]) == BULK_CAP, 60, "the bulk lane to fill to its cap")
    wait_until(lambda: LANE_FULL_LOGGED in api.output(), 60, "the API to refuse the flood at the cap")
    live = {
        page_id: post_until_decided(api.url, live_secret, body)
        for page_id, body in map(pageview, range(LIVE_PAGEVIEWS))
    }
    depths = {lane: real_redis.xlen(stream) for lane, stream in lanes.items()}

    worker = processes.worker(tmp_path / "store")
    acknowledged = acknowledgements.up_to_the_first(Lane.LIVE)
    summary = finished(replay)
    wait_until(lambda: drained(real_redis), 120, "both lanes to drain")
    assert worker.stop() == 0

    assert all(answers[-1].status_code == 202 for answers in live.values()), [a[-1].text for a in live.values()]
    assert depths == {Lane.LIVE: LIVE_PAGEVIEWS, Lane.BULK: BULK_CAP}
    assert "retried requests" in summary and "503" in summary  # the flood did hit its cap
    # Not delayed: the worker stored the live pageviews ahead of the flood's backlog (ten
    # batches), behind at most the bulk batch it was processing and the one it claimed ahead.
    assert acknowledged.count(Lane.BULK) <= 2, acknowledged
    pages, _ = stored_pages(tmp_path / "store")
    assert pages == Counter(replayed) + Counter(live.keys())  # everything, exactly once
    assert queued_by_token(real_redis) == {}


def test_two_replays_of_different_tokens_progress_side_by_side_and_a_third_still_gets_in(
    processes: Processes, replays: Replays, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api(HITSTREAM_BULK_QUEUE_MAX_DEPTH=str(SHARED_CAP), HITSTREAM_TOKEN_QUEUE_SHARE=str(SHARE))
    secrets = [ingest_token(real_redis, bulk=True) for _ in range(3)]
    tokens = [token_id(real_redis, secret) for secret in secrets]
    files = [tmp_path / f"customer-{n}.ndjson" for n in range(2)]
    replayed = [replay_file(path, n * 100_000, FLOOD_LINES) for n, path in enumerate(files)]
    both_at_their_share = {tokens[0]: SHARE_ENTRIES, tokens[1]: SHARE_ENTRIES}

    floods = [replays.start(path, api.url, secret) for path, secret in zip(files, secrets, strict=False)]
    # No worker yet, so nothing leaves the lane: each flood fills its share and is refused
    # past it, and both stay at their share until the worker starts.
    wait_until(lambda: queued_by_token(real_redis) == both_at_their_share, 60, "both floods to fill their share")
    wait_until(lambda: BATCH_503_LOGGED in api.output(), 60, "the API to refuse a flood past its share")
    running = [flood.poll() is None for flood in floods]
    over_share = [post_until_decided(api.url, secret, pageview(n)[1]) for n, secret in enumerate(secrets[:2])]
    third_id, third_body = pageview(999_999)
    third_answers = post_until_decided(api.url, secrets[2], third_body)
    queued = queued_by_token(real_redis)

    worker = processes.worker(tmp_path / "store")
    summaries = [finished(flood) for flood in floods]
    wait_until(lambda: drained(real_redis), 120, "the bulk lane to drain")
    assert worker.stop() == 0

    # Side by side: both floods held their whole share at once, while both were still running
    # (neither had finished, nor could it before the worker started).
    assert running == [True, True]
    # The shares held: a token's count only grows while no worker runs, so these are the most
    # either flood ever had queued, after each was refused past its share.
    assert queued == {**both_at_their_share, tokens[2]: 1}
    for answers in over_share:
        assert (answers[-1].status_code, answers[-1].json()) == (503, {"message": TOKEN_SHARE_FULL})
        assert answers[-1].headers["Retry-After"] == "1"
    assert any("503" in summary for summary in summaries)  # the replays rode through the refusals
    # The third token got in while both floods were at their share: neither the lane nor a
    # share refused it (a plain 503, Redis slower than the API's timeout, is retried).
    assert third_answers[-1].status_code == 202, [answer.text for answer in third_answers]
    pages, _ = stored_pages(tmp_path / "store")
    assert pages == Counter(replayed[0]) + Counter(replayed[1]) + Counter([third_id])
    assert queued_by_token(real_redis) == {}  # each share freed up as its pageviews were stored


def test_a_replay_with_a_live_token_stops_at_once_with_a_clear_message(
    processes: Processes, replays: Replays, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api()
    replay_file(tmp_path / "history.ndjson", 0, 2000)

    replay = replays.start(tmp_path / "history.ndjson", api.url, ingest_token(real_redis))
    stdout, stderr = replay.communicate(timeout=60)

    assert replay.returncode == 1
    assert LIVE_TOKEN_IN_BULK in stderr and "tokens create --bulk" in stderr
    assert real_redis.xlen(LANE_KEYS[Lane.LIVE].stream) == real_redis.xlen(LANE_KEYS[Lane.BULK].stream) == 0
    rejects = tmp_path / "history.ndjson.rejects.ndjson"
    assert not rejects.exists() or rejects.read_bytes() == b""  # no line was recorded as rejected
