"""Shared fixtures. Pipeline tests use a real Redis server that this suite starts itself on
a free port (AOF on), never the developer's Redis and never fakeredis."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from hypothesis import settings

from hitstream.redis_server import RedisServer
from tests.ports import free_port
from tests.tiers import processes_only_in_their_tier, shared_server, tier_of

# The suite writes bytecode caches even where PYTHONDONTWRITEBYTECODE is set (container images
# often set it): without them every pytest process rewrites and compiles each test module again
# and every process a test starts compiles hitstream's modules again (docs/testing.md).
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# Temporary directories (stores, Redis files, logs) in memory where the machine has /dev/shm:
# the embedded store creates a dozen files per insert, which costs ext4 more CPU than tmpfs
# (docs/testing.md). pytest reads this variable when it first makes a temporary directory,
# after this initial conftest is loaded; it keeps the three newest runs. .ci/run gives its own
# --basetemp, there too.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", "/dev/shm")

# Fixtures defined next to their helpers, for every test module: ``processes`` (real
# ``hitstream`` processes), ``store_dsn`` / ``store`` (an embedded store),
# ``clickhouse_http`` (a ClickHouse HTTP interface over a chdb store, in its own process),
# ``lazyfs`` (a directory on LazyFS, whose power can be cut).
pytest_plugins = ["tests.procs", "tests.stores", "tests.clickhouse_http", "tests.endpoint", "tests.lazyfs"]

# Property tests check answers, not speed: on two cores shared with the suite's servers an
# example can take longer than Hypothesis's default 200 ms deadline and fail for that alone.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    with shared_server():  # started by the first test that needs it, whatever its tier
        server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own (AOF on, free port): the test may stop, kill, restart
    or freeze it (SIGSTOP) without stalling the tests sharing the session's server."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)  # in case the test left it frozen
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the suite's real Redis server."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def hitstream_env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for hitstream processes started by a test: this test's Redis and chdb path."""
    env = {
        "HITSTREAM_REDIS_URL": redis_url,
        "HITSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **env}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test's tier marker, from the fixtures it uses (tests/tiers.py). The privacy scan
    searches what every other test's processes left behind (stores, logs, metrics pages), so
    it runs last; the sort is stable: everything else keeps its order."""
    for item in items:
        item.add_marker(tier_of(item.fixturenames))
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_privacy_scan.py"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with processes_only_in_their_tier(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with processes_only_in_their_tier(item):
        return (yield)
