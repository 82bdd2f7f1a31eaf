"""A lean pipelined Redis connection for the hand-off's hot path.

This connection packs commands and parses replies with hiredis (C), and lets any number of
commands be in flight at once: each ``execute`` writes its commands immediately and awaits its
own replies, which arrive in order. It is kept because it pays: with the hand-off on redis-py's
asyncio client instead (its pool's connection, hiredis-packed; commit e3ab82d), the
ingest endpoint used 1.15x the server CPU per request and served 0.76x the requests/s, all
else equal (bench/api_bench.py --baseline-tree, 4 rounds of 5 s, same run, busy 2-core
machine; the rule was: keep it only if it is worth more than 5%). In process, one 32-request
script call cost 41 µs of CPU here, 54 µs on a redis-py connection and 89 µs through
``execute_command``; under load redis-py's connection also waits more loop iterations before
it writes. Where it connects comes from shared.redis_client, like every other client: the
URL's host, port or socket, user, password, database and TLS options (an SSL context built
by redis-py from the URL's ``ssl_*`` options), or, for a Sentinel URL, the primary the
sentinels name at each connection (redis-py's ``discover_master``).

A wire given a durability mode that needs fsync (shared.durability) checks, on every new
connection, that Redis runs ``appendonly yes`` + ``appendfsync always``; when it does not, the
connection is refused with ``NotDurable`` (a ConnectionError, so the caller answers 503), one
warning line names the setting, and for ``REFUSAL_SECONDS`` every command fails at once
instead of connecting and asking again.

Failure rules, so the caller can always answer (503) instead of hanging: connecting and every
reply are bounded by ``timeout``; a timeout or a broken connection closes the connection and
fails every command still waiting on it with ``ConnectionError``; the next command connects
again. An error reply (``-ERR …``) is returned to its caller as a ``ReplyError``, it does not
break the connection. The rest of the API uses redis-py (lookups, readyz, metrics).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import Any

import hiredis
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.connection
import redis.exceptions
from hiredis import ReplyError

from shared.durability import CONFIG_PATTERN, Durability, NotDurable, config_pairs, refusal
from shared.redis_client import RedisAddress

__all__ = ["RedisWire", "ReplyError"]

log = logging.getLogger(__name__)

# After a Redis that cannot give the durability mode, commands fail at once for this long
# before the next connection asks Redis again (an operator's fix is seen within a second).
REFUSAL_SECONDS = 1.0

Argument = bytes | str | int | float
Command = tuple[Argument, ...]


class _Connection(asyncio.Protocol):
    """One socket: writes commands, hands each reply to the oldest waiting future."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    @property
    def closed(self) -> bool:
        """Lost, or closing: the event loop reports a lost connection one iteration after the
        transport closed, and writing in between would raise."""
        return self._lost or self._transport is None or self._transport.is_closing()

    def send(self, payload: bytes, replies: int) -> list[asyncio.Future[Any]]:
        """Write ``payload`` (holding ``replies`` commands); one future per reply, in order."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(replies)]
        self._waiting.extend(futures)
        assert self._transport is not None
        self._transport.write(payload)
        return futures

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiting.popleft()
                if not waiter.done():  # its caller may have given up already
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # garbage, or a reply nobody asked for
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection to Redis lost"))

    def close(self) -> None:
        """Close now; waiting commands fail with ConnectionError (their replies never come)."""
        if not self._lost and self._transport is not None:
            self._transport.abort()  # calls connection_lost on the next loop iteration
        self.connection_lost(None)


class RedisWire:
    """Pipelined commands on one connection to ``address`` (shared.redis_client)."""

    def __init__(
        self, address: RedisAddress, timeout_seconds: float, durability: Durability = Durability.RELAXED
    ) -> None:
        self._address = address
        self._durability = durability
        self._refused: NotDurable | None = None
        self._refused_until = 0.0  # time.monotonic()
        self._options = address.options
        self._timeout = timeout_seconds
        self._ssl = _ssl_context(address.options)
        self._sentinels = (
            redis.asyncio.sentinel.Sentinel(
                address.sentinels,
                sentinel_kwargs={
                    "socket_timeout": timeout_seconds,
                    "socket_connect_timeout": timeout_seconds,
                    **address.sentinel_options,
                },
            )
            if address.sentinels
            else None
        )
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def execute(self, *commands: Command) -> Coroutine[Any, Any, list[Any]]:
        """The commands' replies, in order (a ``ReplyError`` for an error reply), to be awaited.

        The commands are written together, on one connection, so what depends on its
        connection goes with the command it is for (``WAIT`` counts the replicas that
        acknowledged its own connection's writes: on a connection that wrote nothing it counts
        every connected replica at once). On an open connection they are written before this
        returns, so Redis works on them while the caller goes on; otherwise once connected.
        The replies are awaited within ``timeout`` of this call. Raises ConnectionError or
        TimeoutError (and then closes the connection)."""
        payload = b"".join([hiredis.pack_command(command) for command in commands])  # type: ignore[arg-type]  # hiredis's stub: a 1-tuple
        connection = self._connection
        if connection is None or connection.closed:
            return self._connect_and_send(payload, len(commands))
        replies = connection.send(payload, len(commands))
        return self._replies(connection, replies, asyncio.get_running_loop().time() + self._timeout)

    async def _connect_and_send(self, payload: bytes, count: int) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + self._timeout
        async with asyncio.timeout_at(deadline):
            connection = await self._connected()
        return await self._replies(connection, connection.send(payload, count), deadline)

    @staticmethod
    async def _replies(connection: _Connection, replies: list[asyncio.Future[Any]], deadline: float) -> list[Any]:
        received = []
        async with asyncio.timeout_at(deadline):
            try:
                for reply in replies:  # they arrive in order
                    received.append(await reply)
            except asyncio.CancelledError:
                # Timed out (or shut down): later replies on this connection would be late too.
                connection.close()
                raise
        return received

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _connected(self) -> _Connection:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        if self._refused is not None and time.monotonic() < self._refused_until:
            raise self._refused
        if self._connecting is None:  # concurrent callers share one attempt
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._connection = attempt.result()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            async with asyncio.timeout(self._timeout):
                if "path" in options:
                    _, connection = await loop.create_unix_connection(_Connection, options["path"])
                else:
                    if self._sentinels is not None:
                        host, port = await self._sentinels.discover_master(self._address.service)
                    else:
                        host, port = options.get("host", "localhost"), options.get("port", 6379)
                    _, connection = await loop.create_connection(
                        _Connection, host, port, ssl=self._ssl, server_hostname=host if self._ssl else None
                    )
                await self._handshake(connection)
        except TimeoutError:
            raise ConnectionError("could not connect to Redis in time") from None
        except redis.exceptions.ConnectionError as error:  # no sentinel knows a primary now
            raise ConnectionError(str(error)) from None
        return connection

    async def _handshake(self, connection: _Connection) -> None:
        """AUTH and SELECT as the URL says, and the durability check, before any command uses
        the connection."""
        commands: list[bytes] = []
        if self._options.get("password") is not None:
            username = self._options.get("username")
            credentials = (username, self._options["password"]) if username else (self._options["password"],)
            commands.append(hiredis.pack_command(("AUTH", *credentials)))
        if self._options.get("db"):
            commands.append(hiredis.pack_command(("SELECT", self._options["db"])))  # type: ignore[arg-type]
        if self._durability.needs_fsync:
            commands.append(hiredis.pack_command(("CONFIG", "GET", CONFIG_PATTERN)))  # type: ignore[arg-type]
        if not commands:
            return
        replies = await asyncio.gather(*connection.send(b"".join(commands), len(commands)))
        setup = replies[:-1] if self._durability.needs_fsync else replies
        for reply in setup:
            if isinstance(reply, ReplyError):
                connection.close()
                raise ConnectionError(f"Redis refused the connection setup: {reply}")
        if self._durability.needs_fsync:
            config = replies[-1]
            self._check_durability(connection, None if isinstance(config, ReplyError) else config_pairs(config))

    def _check_durability(self, connection: _Connection, config: dict[str, str] | None) -> None:
        reason = refusal(self._durability, config)
        if reason is None:
            self._refused = None
            return
        connection.close()
        log.warning("refusing to answer 202: %s", reason)
        self._refused = NotDurable(reason)
        self._refused_until = time.monotonic() + REFUSAL_SECONDS
        raise self._refused


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context redis-py would use for these URL options (``ssl_cert_reqs``, ...); None
    without TLS."""
    if options.get("connection_class") is not redis.connection.SSLConnection and not options.get("ssl"):
        return None
    tls_options = {name: value for name, value in options.items() if name.startswith("ssl_")}
    return redis.asyncio.connection.SSLConnection(**tls_options).ssl_context.get()
