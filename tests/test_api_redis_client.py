"""The API's Redis clients, all made from one URL by shared.redis_client (the hand-off's
connection and redis-py for lookups and readiness), against real Redis servers: the URL's
database and password apply to every one of them; refused credentials, a closed port, a
frozen Redis or no sentinel answering give 503 within the timeout; a restarted Redis (its
script cache empty) is used again without restarting the API. Sentinel URLs are parsed and
checked at start-up (tests/test_sentinel.py runs a real failover)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from shared.config import ConfigError, load_settings
from shared.redis_client import redis_address, redis_client
from shared.urls import redacted
from tests.endpoint import assert_error, client_for, post
from tests.ports import free_port
from tests.timing import late_bound
from tests.traffic import ingest_token

PASSWORD = "s3cret"


def assert_unavailable(response: object) -> None:
    assert_error(response, 503, "Service not available")
    assert response.headers["Retry-After"] == "1"  # type: ignore[attr-defined]


def test_the_urls_database_and_password_apply_to_every_client_of_the_api(own_redis: RedisServer) -> None:
    redis.Redis.from_url(own_redis.url).config_set("requirepass", PASSWORD)
    url = f"redis://:{PASSWORD}@{own_redis.host}:{own_redis.port}/3"
    in_db_3 = redis_client(url)
    secret = ingest_token(in_db_3)  # a token that exists in database 3 only
    with client_for(url) as api:
        assert api.get("/readyz").status_code == 200
        assert post(api, secret).status_code == 202
    assert in_db_3.xlen(keys.STREAM) == 1
    assert redis_client(f"redis://:{PASSWORD}@{own_redis.host}:{own_redis.port}/0").exists(keys.STREAM) == 0


@pytest.mark.parametrize("credentials", ["wrong", ""], ids=["a wrong password", "no password where one is required"])
def test_refused_credentials_make_ingest_and_readiness_answer_503_alike(
    own_redis: RedisServer, credentials: str
) -> None:
    secret = ingest_token(redis.Redis.from_url(own_redis.url))
    redis.Redis.from_url(own_redis.url).config_set("requirepass", PASSWORD)
    userinfo = f":{credentials}@" if credentials else ""
    with client_for(f"redis://{userinfo}{own_redis.host}:{own_redis.port}/0") as api:
        assert_error(api.get("/readyz"), 503, "Redis does not answer")
        assert_unavailable(post(api, secret))


def test_a_closed_port_answers_503_without_waiting_for_the_timeout() -> None:
    timeout_seconds = 30  # far beyond any delay of a loaded machine: waiting for it would show
    with client_for(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_ms=timeout_seconds * 1000) as api:
        started = time.monotonic()
        assert_unavailable(post(api, "any-token"))
        assert time.monotonic() - started < timeout_seconds


def test_a_frozen_redis_answers_503_within_the_timeout_and_202_once_it_thaws(own_redis: RedisServer) -> None:
    assert own_redis.process is not None
    secret = ingest_token(redis.Redis.from_url(own_redis.url))
    timeout_seconds = 0.3
    with client_for(own_redis.url, redis_timeout_ms=int(timeout_seconds * 1000)) as api:
        assert post(api, secret).status_code == 202  # the token and its site are cached now
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        frozen = post(api, secret)  # answered while Redis is still frozen: no hang
        waited = time.monotonic() - started
        os.kill(own_redis.process.pid, signal.SIGCONT)
        assert_unavailable(frozen)
        assert timeout_seconds <= waited < late_bound(timeout_seconds)
        assert post(api, secret).status_code == 202
    # Both 202s are queued; the 503's script call sat in Redis's socket buffer and may have run
    # once Redis thawed (a 503 promises nothing either way; the client's retry keeps its page_id).
    assert redis.Redis.from_url(own_redis.url).xlen(keys.STREAM) in (2, 3)


def test_a_restarted_redis_is_used_again_without_restarting_the_api(own_redis: RedisServer) -> None:
    secret = ingest_token(redis.Redis.from_url(own_redis.url))
    with client_for(own_redis.url) as api:
        assert post(api, secret).status_code == 202
        own_redis.stop()
        assert_unavailable(post(api, secret))
        own_redis.start()  # the same port and AOF; its script cache is empty (EVALSHA: NOSCRIPT)
        assert post(api, secret).status_code == 202
    assert redis.Redis.from_url(own_redis.url).xlen(keys.STREAM) == 2


def test_a_sentinel_url_names_its_sentinels_service_database_and_options() -> None:
    address = redis_address(
        "redis+sentinel://app:p%40ss@10.0.0.1:26379,sentinel-2:26380,sentinel-3/mymaster/2"
        "?socket_keepalive=true&sentinel_password=watch"
    )
    assert address.sentinels == (("10.0.0.1", 26379), ("sentinel-2", 26380), ("sentinel-3", 26379))
    assert address.service == "mymaster"
    assert address.options == {"username": "app", "password": "p@ss", "db": 2, "socket_keepalive": True}
    assert address.sentinel_options == {"password": "watch"}
    assert redis_address("rediss+sentinel://s1:26379/mymaster").options == {"ssl": True}


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://127.0.0.1:6379", "must start with redis://"),
        ("redis+sentinel:///mymaster/0", "names no sentinel"),
        ("redis+sentinel://s1:26379,s2:26379/", "names no Sentinel service"),
        ("redis+sentinel://s1:port/mymaster", "has no valid port"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ],
)
def test_an_unusable_redis_url_stops_start_up_naming_the_variable(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match="HITSTREAM_REDIS_URL") as refused:
        load_settings({"HITSTREAM_REDIS_URL": url})
    assert complaint in str(refused.value)


def test_a_sentinel_urls_password_is_hidden_when_printed() -> None:
    url = "redis+sentinel://app:s3cret@s1:26379,s2:26379/mymaster/0"
    assert redacted(url) == "redis+sentinel://app:***@s1:26379,s2:26379/mymaster/0"


def test_the_api_answers_503_while_no_sentinel_answers() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster/0"
    timeout_seconds = 0.5
    with client_for(url, redis_timeout_ms=int(timeout_seconds * 1000)) as api:
        started = time.monotonic()
        assert_unavailable(post(api, "any-token"))
        assert_error(api.get("/readyz"), 503, "Redis does not answer")
        assert time.monotonic() - started < 2 * late_bound(timeout_seconds)  # two requests
