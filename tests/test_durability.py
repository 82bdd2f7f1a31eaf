"""Durability modes (shared.durability): what a 202 waits for, and the refusals when Redis
cannot give it. In process against real Redis servers of the tests' own: a Redis without
``appendfsync always`` gets 503 + Retry-After in the durable modes (a log line and /readyz
name the setting) and 202 in ``relaxed``; ``replicated`` answers 503 until a replica
acknowledges, and the client's retry of the same item is queued once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis
from starlette.testclient import TestClient

from hitstream.redis_server import RedisServer
from hitstream.up import own_socket, start_redis
from shared import keys
from shared.config import ConfigError, Settings, load_settings
from shared.durability import Durability, refusal
from tests.endpoint import BODY, World, assert_error, client_for, make_world, post
from tests.ports import free_port
from tests.procs import wait_until

PAGE_ID = "7d1c5a2e-0b7f-4d6e-9f61-1a2b3c4d5e6f"
RETRIED = {**BODY, "page_id": PAGE_ID}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"appendonly": "no", "appendfsync": "always"}, "appendonly yes, and it is 'no'"),
        ({"appendonly": "yes", "appendfsync": "everysec"}, "appendfsync always, and it is 'everysec'"),
        ({"appendonly": "yes", "appendfsync": "no"}, "appendfsync always, and it is 'no'"),
        (None, "Redis refused CONFIG GET"),
    ],
)
@pytest.mark.parametrize("mode", [Durability.FSYNC, Durability.REPLICATED])
def test_a_durable_mode_refuses_a_redis_that_does_not_fsync_every_write_naming_the_setting(
    mode: Durability, config: dict[str, str] | None, named: str
) -> None:
    reason = refusal(mode, config)
    assert reason is not None and named in reason and f"HITSTREAM_DURABILITY={mode}" in reason


def test_relaxed_accepts_any_redis_and_the_durable_modes_accept_aof_always() -> None:
    assert refusal(Durability.RELAXED, {"appendonly": "no", "appendfsync": "no"}) is None
    assert refusal(Durability.RELAXED, None) is None
    for mode in (Durability.FSYNC, Durability.REPLICATED):
        assert refusal(mode, {"appendonly": "yes", "appendfsync": "always"}) is None


def test_the_durability_settings_are_read_and_bad_values_named() -> None:
    assert load_settings({}).durability is Durability.FSYNC
    assert load_settings({"HITSTREAM_DURABILITY": "Replicated"}).durability is Durability.REPLICATED
    with pytest.raises(ConfigError, match="HITSTREAM_DURABILITY='sometimes' is invalid: must be one of fsync"):
        load_settings({"HITSTREAM_DURABILITY": "sometimes"})
    with pytest.raises(ConfigError, match="HITSTREAM_REPLICA_TIMEOUT_MS=300 is invalid: must be below"):
        load_settings({"HITSTREAM_DURABILITY": "replicated", "HITSTREAM_REPLICA_TIMEOUT_MS": "300"})
    # The replica timeout only matters where replicas are waited for.
    assert load_settings({"HITSTREAM_REDIS_TIMEOUT_MS": "50"}).redis_timeout_ms == 50


@pytest.fixture
def everysec_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis with AOF on but fsynced once a second: what `relaxed` keeps, the old default."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "everysec", appendfsync="everysec")
    server.start()
    yield server
    server.stop()


def world_on(url: str) -> World:
    return make_world(redis.Redis.from_url(url))


@pytest.mark.parametrize("mode", ["fsync", "replicated"])
def test_a_durable_mode_on_a_redis_fsyncing_once_a_second_answers_503_and_queues_nothing(
    everysec_redis: RedisServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = world_on(everysec_redis.url)
    with caplog.at_level(logging.WARNING), client_for(everysec_redis.url, durability=Durability(mode)) as api:
        answer = post(api, world.secret, RETRIED)
        ready = api.get("/readyz")
    assert_error(answer, 503, "Service not available")
    assert int(answer.headers["Retry-After"]) >= 1
    assert ready.status_code == 503 and "appendfsync always, and it is 'everysec'" in ready.json()["message"]
    assert world.redis.xlen(keys.STREAM) == 0
    refusals = [record.getMessage() for record in caplog.records if "refusing to answer 202" in record.getMessage()]
    assert refusals and all("appendfsync always" in line for line in refusals)


def test_relaxed_on_the_same_redis_answers_202(everysec_redis: RedisServer) -> None:
    world = world_on(everysec_redis.url)
    with client_for(everysec_redis.url, durability=Durability.RELAXED) as api:
        assert post(api, world.secret, RETRIED).status_code == 202
        assert api.get("/readyz").status_code == 200
    assert world.redis.xlen(keys.STREAM) == 1


def test_an_operator_fixing_appendfsync_gets_202_without_restarting_the_api(everysec_redis: RedisServer) -> None:
    world = world_on(everysec_redis.url)
    with client_for(everysec_redis.url) as api:
        assert post(api, world.secret, RETRIED).status_code == 503
        world.redis.config_set("appendfsync", "always")
        # The refusal is remembered for a second (no CONFIG GET per request), then asked again.
        wait_until(lambda: post(api, world.secret, RETRIED).status_code == 202, 10, "a 202 after the fix")
    assert world.redis.xlen(keys.STREAM) == 1


@pytest.fixture
def config_refusing_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis whose CONFIG command is disabled, as managed services do."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis", extra=("--rename-command", "CONFIG", ""))
    server.start()
    yield server
    server.stop()


def test_a_redis_that_refuses_config_cannot_be_checked_so_it_gets_503(config_refusing_redis: RedisServer) -> None:
    world = world_on(config_refusing_redis.url)
    with client_for(config_refusing_redis.url) as api:
        answer = post(api, world.secret, RETRIED)
        ready = api.get("/readyz")
    assert_error(answer, 503, "Service not available")
    assert "Redis refused CONFIG GET" in ready.json()["message"]


def test_replicated_without_a_replica_answers_503_and_the_retry_after_one_joins_is_queued_once(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    world = world_on(own_redis.url)
    world.redis.config_set("repl-diskless-sync-delay", 0)  # the replica syncs at once
    # Ample: right after its first sync a replica took more than 50 ms to acknowledge.
    settings = {"durability": Durability.REPLICATED, "min_replicas": 1, "replica_timeout_ms": 1000}
    replica = RedisServer(
        port=free_port(), data_dir=tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(own_redis.port))
    )
    try:
        with client_for(own_redis.url, **settings) as api:
            assert_error(post(api, world.secret, RETRIED), 503, "Service not available")
            # Not acknowledged is not lost: the envelope may be queued, and its retry is recognised.
            assert world.redis.xlen(keys.STREAM) == 1
            replica.start()
            wait_until(lambda: replicas_in_sync(world.redis) == 1, 30, "the replica to sync")
            retried = post(api, world.secret, RETRIED)
            fresh = post(api, world.secret, BODY)
        assert retried.status_code == 202 and fresh.status_code == 202
        assert world.redis.xlen(keys.STREAM) == 2  # the retried page once, the fresh one once
    finally:
        replica.stop()


def replicas_in_sync(client: redis.Redis) -> int:
    info = client.info("replication")
    return sum(1 for name, value in info.items() if name.startswith("slave") and value.get("state") == "online")


def test_up_never_uses_or_changes_a_chosen_redis_that_cannot_give_the_mode(
    everysec_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITSTREAM_REDIS_URL", everysec_redis.url)
    with pytest.raises(click.ClickException, match="the Redis at HITSTREAM_REDIS_URL cannot be used: .*appendfsync"):
        start_redis(Settings(redis_url=everysec_redis.url), tmp_path / "redis")
    assert redis.Redis.from_url(everysec_redis.url).config_get("appendfsync") == {"appendfsync": "everysec"}


def test_up_runs_a_redis_of_its_own_when_the_default_address_cannot_give_the_mode(
    everysec_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HITSTREAM_REDIS_URL", raising=False)
    url, own = start_redis(Settings(redis_url=everysec_redis.url), tmp_path / "redis")
    try:
        assert own is not None and url == f"unix://{own_socket(tmp_path / 'redis')}?db=0"
        config = redis.Redis.from_url(url).config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
        # A second start on the same data directory finds that server, not a second one.
        assert start_redis(Settings(redis_url=everysec_redis.url), tmp_path / "redis") == (url, None)
    finally:
        if own is not None:
            own.stop()
    assert redis.Redis.from_url(everysec_redis.url).config_get("appendfsync") == {"appendfsync": "everysec"}


def test_api_clients_tests_use_are_durable_by_default(api: TestClient, world: World) -> None:
    # The suite's Redis servers fsync every write, so the default mode answers 202.
    assert post(api, world.secret, RETRIED).status_code == 202
