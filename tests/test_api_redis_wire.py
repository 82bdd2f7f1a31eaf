"""The hand-off's pipelined Redis connection against real Redis servers: concurrent replies
reach their own callers, error replies do not break the connection, the URL's database and
password apply, and a dead or frozen Redis fails fast (then the next command reconnects)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import ssl
import time

import pytest
import redis

from hitstream.redis_server import RedisServer
from ingest_api.redis_wire import RedisWire, ReplyError, _ssl_context
from shared.redis_client import redis_address
from tests.ports import free_port
from tests.timing import late_bound


def run(coroutine_function, *args):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine_function(*args))


def test_concurrent_commands_each_get_their_own_reply(own_redis: RedisServer) -> None:
    async def scenario() -> list[object]:
        wire = RedisWire(redis_address(own_redis.url), 2.0)
        try:
            return [
                reply
                for replies in await asyncio.gather(*(wire.execute(("INCRBY", "counter", n)) for n in range(1, 201)))
                for reply in replies
            ]
        finally:
            wire.close()

    # Sent in order on one connection: caller n sees the running total after its own INCRBY.
    assert run(scenario) == list(itertools.accumulate(range(1, 201)))


def test_an_error_reply_is_returned_and_the_connection_stays_usable(own_redis: RedisServer) -> None:
    async def scenario() -> tuple[object, object]:
        wire = RedisWire(redis_address(own_redis.url), 2.0)
        try:
            (error,) = await wire.execute(("EVALSHA", "0" * 40, 0))
            return error, (await wire.execute(("PING",)))[0]
        finally:
            wire.close()

    error, pong = run(scenario)
    assert isinstance(error, ReplyError) and str(error).startswith("NOSCRIPT")
    assert pong == b"PONG"


def test_the_urls_database_and_password_apply(own_redis: RedisServer) -> None:
    control = redis.Redis.from_url(own_redis.url)
    control.config_set("requirepass", "s3cret")

    async def scenario(url: str) -> object:
        wire = RedisWire(redis_address(url), 2.0)
        try:
            (reply,) = await wire.execute(("SET", "where", "here"))
            return reply
        finally:
            wire.close()

    base = f"redis://:s3cret@{own_redis.host}:{own_redis.port}"
    assert run(scenario, base + "/3") == b"OK"
    with pytest.raises(ConnectionError, match="refused the connection setup"):
        run(scenario, f"redis://:wrong@{own_redis.host}:{own_redis.port}/3")
    authed = redis.Redis(host=own_redis.host, port=own_redis.port, password="s3cret", db=3)
    assert authed.get("where") == b"here"
    assert redis.Redis(host=own_redis.host, port=own_redis.port, password="s3cret").get("where") is None


def test_a_closed_port_fails_without_waiting_for_the_timeout() -> None:
    timeout_seconds = 30.0  # far beyond any delay of a loaded machine: waiting for it would show
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        run(RedisWire(redis_address(f"redis://127.0.0.1:{free_port()}/0"), timeout_seconds).execute, ("PING",))
    assert time.monotonic() - started < timeout_seconds


TIMEOUT_SECONDS = 0.3


def test_a_frozen_redis_times_out_and_the_next_command_reconnects(own_redis: RedisServer) -> None:
    assert own_redis.process is not None

    async def scenario() -> tuple[float, object]:
        wire = RedisWire(redis_address(own_redis.url), TIMEOUT_SECONDS)
        try:
            assert await wire.execute(("PING",)) == [b"PONG"]
            os.kill(own_redis.process.pid, signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(TimeoutError):  # while Redis is still frozen: no hang
                await wire.execute(("PING",))
            waited = time.monotonic() - started
            os.kill(own_redis.process.pid, signal.SIGCONT)
            return waited, await wire.execute(("PING",))
        finally:
            wire.close()

    waited, pong = run(scenario)
    assert TIMEOUT_SECONDS <= waited < late_bound(TIMEOUT_SECONDS)
    assert pong == [b"PONG"]


@pytest.mark.parametrize(
    ("query", "verify_mode", "check_hostname"),
    [
        ("", ssl.CERT_REQUIRED, True),
        ("?ssl_cert_reqs=none", ssl.CERT_NONE, False),
        ("?ssl_cert_reqs=optional&ssl_check_hostname=false", ssl.CERT_OPTIONAL, False),
    ],
)
def test_a_tls_urls_options_shape_the_connection_as_redis_py_reads_them(
    query: str, verify_mode: ssl.VerifyMode, check_hostname: bool
) -> None:
    """The hand-off's connection and redis-py's clients (readiness, lookups) read one rediss://
    URL alike: a /readyz that is green while every ingest answers 503 is not possible."""
    for url in (f"rediss://:pw@redis.example:6380/0{query}", f"rediss+sentinel://s1:26379/mymaster/0{query}"):
        context = _ssl_context(redis_address(url).options)
        assert context is not None
        assert (context.verify_mode, context.check_hostname) == (verify_mode, check_hostname)
    assert _ssl_context(redis_address(f"redis://redis.example:6379/0{query}").options) is None


def test_commands_sent_together_share_one_connection_also_when_it_connects_for_them(own_redis: RedisServer) -> None:
    async def scenario() -> list[object]:
        wire = RedisWire(redis_address(own_redis.url), 2.0)
        try:
            # Not connected yet: both wait for the connection, then go out together on it.
            return await wire.execute(("CLIENT", "ID"), ("CLIENT", "ID"))
        finally:
            wire.close()

    first, second = run(scenario)
    assert isinstance(first, int) and first == second
