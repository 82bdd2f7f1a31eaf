"""``ensure_redis``, the one way ``hitstream up`` and CI start a Redis server: only when none
answers, only on this machine, and a refusal never shows the URL's password."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from hitstream.redis_server import NoLocalRedis, ensure_redis
from tests.ports import free_port


def test_a_redis_that_already_answers_is_used_and_none_is_started(redis_url: str, tmp_path: Path) -> None:
    assert ensure_redis(redis_url, tmp_path / "redis") is None
    assert not (tmp_path / "redis").exists()


@pytest.mark.usefixtures("commands")  # ensure_redis starts a Redis server
def test_a_local_url_nobody_answers_gets_a_server_with_aof_in_the_data_dir(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = ensure_redis(url, tmp_path / "redis")
    assert server is not None
    try:
        client = redis.Redis.from_url(url)
        assert client.ping() and client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir")["dir"] == str((tmp_path / "redis").resolve())
    finally:
        server.stop()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret-password@192.0.2.1:6379/0",  # another machine (TEST-NET-1, never routed)
        "rediss://user:s3cret-password@127.0.0.1:1/0",  # TLS: not a server we would start
        "unix:///tmp/hitstream-nobody-here.sock",
    ],
)
def test_a_url_not_on_this_machine_is_refused_naming_the_host_but_not_the_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(NoLocalRedis) as refused:
        ensure_redis(url, tmp_path / "redis")
    assert "HITSTREAM_REDIS_URL" in str(refused.value)
    assert "s3cret-password" not in str(refused.value)
    assert not (tmp_path / "redis").exists()
