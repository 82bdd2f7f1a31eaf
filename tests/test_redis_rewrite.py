"""When workers have Redis rewrite its files (workers.host.redis_rewrite), against a real Redis of
the test's own: due by count or by time, once for many workers, never counted while a rewrite
Redis began earlier is still running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from tests.procs import wait_for_redis_clock, wait_until
from workers.host.redis_rewrite import RewriteTrigger


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(own_redis.url)
    yield connection
    connection.close()


def process(client: redis.Redis, count: int) -> None:
    """What the queue sees when ``count`` pageviews are queued and acknowledged."""
    for _ in range(count):
        client.xdel(keys.STREAM, client.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: "{}"}))


def rewrites(client: redis.Redis) -> int:
    """AOF rewrites Redis finished since it started (waits for a running one)."""
    wait_until(lambda: not client.info("persistence")["aof_rewrite_in_progress"], 30, "the rewrite to finish")
    return int(client.info("persistence")["aof_rewrites"])


def next_check(client: redis.Redis) -> None:
    """Until the previous check's lock has expired (one check's period on Redis's clock)."""
    wait_until(lambda: not client.exists(keys.REWRITE_LOCK), 30, "the previous check's lock to expire")


def time_bound_passed(client: redis.Redis, seconds: float) -> None:
    """Until Redis's clock is ``seconds`` past the last rewrite (or the first check)."""
    wait_for_redis_clock(client, int(client.hget(keys.REWRITE_STATE, "at_ms")) + int(seconds * 1000))


def test_many_workers_trigger_one_rewrite_when_enough_entries_were_processed(client: redis.Redis) -> None:
    workers = [RewriteTrigger(client, after_entries=100, after_seconds=3600) for _ in range(3)]
    before = rewrites(client)

    process(client, 99)
    assert [worker.check() for worker in workers] == [False, False, False]
    next_check(client)
    process(client, 1)
    assert [worker.check() for worker in workers] == [True, False, False]
    assert rewrites(client) == before + 1
    next_check(client)
    assert [worker.check() for worker in workers] == [False, False, False], "nothing processed since"
    assert client.hget(keys.REWRITE_STATE, "processed") == b"100"


def test_the_time_bound_triggers_a_rewrite_for_a_few_entries_and_none_for_none(client: redis.Redis) -> None:
    worker = RewriteTrigger(client, after_entries=1_000_000, after_seconds=1)
    before = rewrites(client)

    assert worker.check() is False  # no stream yet
    process(client, 1)
    next_check(client)
    assert worker.check() is False  # the first check starts the clock
    next_check(client)
    time_bound_passed(client, 1)
    assert worker.check() is True
    assert rewrites(client) == before + 1
    next_check(client)
    assert worker.check() is False, "a second without processed pageviews needs no rewrite"
    process(client, 3)
    next_check(client)
    time_bound_passed(client, 1)
    assert worker.check() is True


def test_a_rewrite_redis_began_earlier_is_waited_for_and_then_a_new_one_taken(client: redis.Redis) -> None:
    worker = RewriteTrigger(client, after_entries=10, after_seconds=3600)
    assert worker.check() is False  # starts the state
    client.mset({f"slow:{number}": "x" for number in range(5)})
    client.config_set("rdb-key-save-delay", 300_000)  # 0.3 s per key: the rewrite runs ~1.5 s
    process(client, 10)
    client.bgrewriteaof()  # began before the trigger: it may not include the latest deletions
    next_check(client)

    assert worker.check() is False
    assert client.hget(keys.REWRITE_STATE, "processed") == b"0", "an earlier rewrite does not count"
    client.config_set("rdb-key-save-delay", 0)
    rewrites(client)
    next_check(client)
    assert worker.check() is True
    assert client.hget(keys.REWRITE_STATE, "processed") == b"10"
