"""Fault suite, Redis: a crash and restart from the AOF, and Redis gone or frozen while clients
keep posting. Each test runs its own Redis server (never the suite's shared one)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from tests.ports import free_port
from tests.procs import Api, Processes, stored_pages, wait_until
from tests.traffic import (
    Answers,
    exact_count,
    ingest_token,
    post_pageviews,
    queued_pages,
)

pytestmark = pytest.mark.faults

REDIS_TIMEOUT_MS = 250
# Event-loop and scheduling delay a loaded 2-core CI machine adds on top of the timeout.
TIMEOUT_SLACK_SECONDS = 0.75
AOF_FSYNC_PERIOD_SECONDS = 1.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)  # in case a test left it frozen
    server.kill()


def post(api: Api, secret: str, count: int, answers: Answers) -> Answers:
    return asyncio.run(post_pageviews(api.url, secret, count, concurrency=20, answers=answers))


def test_redis_crash_after_202_and_restart_from_aof_loses_nothing(
    processes: Processes, own_redis: RedisServer, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    secret = ingest_token(client)
    store = tmp_path / "store"
    settings = {"HITSTREAM_REDIS_URL": own_redis.url}
    api = processes.api(**settings)
    answers = Answers()

    worker = processes.worker(store, **settings)
    worker.wait_ready(client)
    post(api, secret, 3000, answers)
    assert worker.stop() == 0
    post(api, secret, 3000, answers)  # answered 202, waiting in the stream, workers stopped
    time.sleep(AOF_FSYNC_PERIOD_SECONDS + 0.5)
    queued = queued_pages(client)
    own_redis.kill()  # SIGKILL: a crash, no shutdown flush
    own_redis.start()
    assert queued_pages(client) == queued, "every pageview queued before the last fsync survived"

    # A crash right after the last 202, no fsync wait: what a Redis process crash alone keeps.
    post(api, secret, 2000, answers)
    queued = queued_pages(client)
    own_redis.kill()
    own_redis.start()
    assert queued_pages(client) == queued, "Redis wrote each command to the AOF before answering"

    worker = processes.worker(store, **settings)
    wait_until(lambda: client.xlen(keys.STREAM) == 0, 60, "the queue to drain after the restarts", interval=0.1)
    assert worker.stop() == 0
    figures = exact_count("redis SIGKILL + AOF restart", answers, stored_pages(store)[0])
    # The API keeps running across both restarts: a request that met a connection Redis had
    # just closed answers 503, never 202.
    assert set(answers.summary()) <= {202, 503}
    assert (figures.duplicated, figures.lost, figures.unanswered_but_stored) == (0, 0, 0)


def test_redis_unavailable_answers_503_with_retry_after_and_the_api_recovers_alone(
    processes: Processes, own_redis: RedisServer
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    secret = ingest_token(client)
    api = processes.api(HITSTREAM_REDIS_URL=own_redis.url, HITSTREAM_REDIS_TIMEOUT_MS=str(REDIS_TIMEOUT_MS))
    before = post(api, secret, 200, Answers())
    assert before.summary() == {202: 200}

    def refused_for_a_while(phase: str) -> Answers:
        """Post for longer than the control-plane cache (2 s), so cached and uncached token
        lookups are both tried; every answer must be a prompt 503 with Retry-After."""
        answers = Answers()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            post(api, secret, 20, answers)
        print(f"\n{phase}: {len(answers.by_page)} posts, slowest 503 {answers.slowest_503 * 1000:.0f} ms")
        assert set(answers.summary()) == {503}, answers.summary()
        assert answers.missing_retry_after == 0
        assert answers.slowest_503 <= REDIS_TIMEOUT_MS / 1000 + TIMEOUT_SLACK_SECONDS
        return answers

    def recovers() -> Answers:
        answers = Answers()
        wait_until(
            lambda: 202 in post(api, secret, 1, answers).by_page.values(),
            10,
            "the API to answer 202 again",
            interval=0.1,
        )
        return answers

    own_redis.stop()  # gone: connections refused
    down = refused_for_a_while("redis stopped")
    own_redis.start()  # same port and data directory; the API is not restarted
    after_restart = recovers()

    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # frozen: connections hang
    try:
        frozen = refused_for_a_while("redis frozen (SIGSTOP)")
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    after_thaw = recovers()

    queued = queued_pages(client)
    answered = Answers()
    for answers in (before, after_restart, after_thaw):
        answered.by_page.update(answers.by_page)
    figures = exact_count(
        "redis stopped then frozen",
        answered,
        Counter({page: queued[page] for page in answered.by_page if page in queued}),
    )
    assert (figures.duplicated, figures.lost, figures.unanswered_but_stored) == (0, 0, 0)
    assert not queued.keys() & down.by_page.keys(), "nothing was queued while Redis was down"
    # A request that timed out against a frozen Redis was already sent: Redis runs it once it
    # thaws. The client saw 503 and must retry with the same page_id (see docs/reliability.md).
    written_after_503 = queued.keys() & frozen.by_page.keys()
    print(f"frozen phase: {len(written_after_503)} of {len(frozen.by_page)} pageviews answered 503 were queued on thaw")
    assert queued.keys() == answered.accepted() | written_after_503
