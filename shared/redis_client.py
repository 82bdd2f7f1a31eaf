"""Every Redis client of every process (API, workers, command line) is made here, from one URL.

``HITSTREAM_REDIS_URL`` names either one server, in redis-py's own URL forms
(``redis://[[user]:password@]host:port/db?option=value``, ``rediss://`` for TLS,
``unix:///path.sock?db=N``), or a primary found through Redis Sentinel:

    redis+sentinel://[[user]:password@]host1:26379,host2:26379/SERVICE/DB?option=value
    rediss+sentinel://...                          (TLS to the primary; sentinels plain)

The user and password are the primary's (AUTH), so are the query options, parsed by redis-py's
``parse_url`` exactly as for ``redis://`` (``ssl_cert_reqs``, ``socket_keepalive``, ...);
``sentinel_password`` (query) is the sentinels' own AUTH password if they have one. A Sentinel
client asks the sentinels for the primary's address whenever it connects, so after a failover
the next connection goes to the new primary, with no restart (redis.sentinel /
redis.asyncio.sentinel). A URL is parsed once per process (``redis_address``).

``timeout_seconds`` bounds connecting and every reply and turns redis-py's retries off: the API
must answer 503 at once rather than after back-off. Without it redis-py's defaults apply
(the command line). Clients given a ``patience_seconds`` (workers:
``HITSTREAM_WORKER_REDIS_PATIENCE``, 15 s by default) keep trying to connect that long, longer
than a Sentinel failover (about 3 s: the primary silent for
``down-after-milliseconds``, then the election) or a Redis restart: with redis-py's default
retries a worker met the dead primary's address until the promotion, and RQ, failing to
finish a job, quit its work loop (tests/test_sentinel.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import parse_url

from shared.urls import redacted

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SERVER_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
# What ``hitstream api`` and the control commands wait for Redis to connect and to answer each
# command before they say it does not (one attempt): redis-py's own default timeout, named.
COMMAND_SECONDS = 5.0
# A patient client's pauses between connection attempts: 100 ms doubling up to 1 s.
_PATIENT_BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: one server (``sentinels`` empty; redis-py reads its URL itself) or a
    Sentinel service, whose primary gets ``options``."""

    options: dict[str, Any]  # redis-py connection keyword arguments from the URL
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""  # the Sentinel service (master) name
    sentinel_options: dict[str, Any] = field(default_factory=dict)


@functools.cache
def redis_address(url: str) -> RedisAddress:
    """The parsed URL; ValueError (saying what is wrong) for one it cannot use."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in SERVER_SCHEMES + SENTINEL_SCHEMES:
        raise ValueError("must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://")
    if scheme in SERVER_SCHEMES:
        return RedisAddress(options=parse_url(url))  # checked here, read by redis-py's from_url
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item.strip())
    service, _, db = path.partition("/")
    if not sentinels:
        raise ValueError("names no sentinel (redis+sentinel://host:26379,host:26379/SERVICE/DB)")
    if not service:
        raise ValueError("names no Sentinel service (redis+sentinel://host:26379/SERVICE/DB)")
    sentinel_options: dict[str, Any] = {}
    arguments = parse_qs(query)
    if "sentinel_password" in arguments:
        sentinel_options["password"] = arguments.pop("sentinel_password")[0]
    # The primary's options, parsed by redis-py as for one server at a stand-in host.
    server_scheme = "rediss" if scheme == "rediss+sentinel" else "redis"
    userinfo = f"{credentials}@" if credentials else ""
    options = parse_url(f"{server_scheme}://{userinfo}sentinel/{db}?{urlencode(arguments, doseq=True)}")
    options.pop("host")
    if options.pop("connection_class", None) is not None:  # rediss: Sentinel picks its own TLS class
        options["ssl"] = True
    return RedisAddress(options, sentinels, service, sentinel_options)


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    if not host:  # no port given
        return item.strip(), DEFAULT_SENTINEL_PORT
    if not port.isdigit():
        raise ValueError(f"sentinel {item.strip()!r} has no valid port")
    return host.strip("[]"), int(port)


def _bounded(timeout_seconds: float | None) -> dict[str, Any]:
    """Socket timeouts for every connection, or none (redis-py's defaults)."""
    if timeout_seconds is None:
        return {}
    return {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}


def _patient_retry(patience_seconds: float) -> redis.retry.Retry:
    """Retries whose pauses (``_PATIENT_BACKOFF``) add up to at least ``patience_seconds``:
    15 s gives 18 (0.1 + 0.2 + 0.4 + 0.8 + 14 x 1 s = 15.5 s)."""
    retries, paused = 0, 0.0
    while paused < patience_seconds:
        retries += 1
        paused += _PATIENT_BACKOFF.compute(retries)
    return redis.retry.Retry(_PATIENT_BACKOFF, retries)


def unanswered(url: str, error: redis.RedisError) -> str:
    """The one line a command ends with when the Redis at ``url`` refuses it or does not reply
    in time (the URL without its password)."""
    return f"Redis does not answer at {redacted(url)} (set by HITSTREAM_REDIS_URL): {error}"


def redis_client(url: str, timeout_seconds: float | None = None, patience_seconds: float | None = None) -> redis.Redis:
    """A synchronous client for ``url`` (see the module docstring)."""
    address = redis_address(url)
    options = _bounded(timeout_seconds)
    if timeout_seconds is not None:
        options["retry"] = redis.retry.Retry(NoBackoff(), 0)
    elif patience_seconds is not None:
        options["retry"] = _patient_retry(patience_seconds)
    if not address.sentinels:
        return redis.Redis.from_url(url, **options)
    sentinels = redis.sentinel.Sentinel(
        address.sentinels, sentinel_kwargs={**_bounded(timeout_seconds), **address.sentinel_options}
    )
    primary = dict(address.options)
    connection_class = _SentinelAskingSSLConnection if primary.pop("ssl", False) else _SentinelAskingConnection
    return sentinels.master_for(address.service, connection_class=connection_class, **primary, **options)


class _SentinelAsking(redis.sentinel.SentinelManagedConnection):
    """A Sentinel-managed connection that behaves like a plain one in two places where
    redis-py 8.1's synchronous one does not (both met in tests/test_sentinel.py):

    - a retried command reconnects through the Sentinel-aware ``connect()``: redis-py's
      ``send_packed_command`` reconnected to the address it had, so a patient worker retried
      against the dead primary for its whole patience, and RQ quit;
    - a read interrupted by an exception closes the connection, as a plain connection's does:
      redis-py's default keeps it, so the blocking dequeue RQ interrupts on SIGTERM left its
      reply pending, and the worker's last command waited behind it (warm shutdown hung)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()
        super().send_packed_command(command, check_health)

    def read_response(
        self,
        disable_decoding: Any = False,
        *,
        timeout: float | object = redis.connection.SENTINEL,
        disconnect_on_error: bool | None = True,
        push_request: bool | None = False,
    ) -> Any:
        return super().read_response(
            disable_decoding, timeout=timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
        )


class _SentinelAskingConnection(_SentinelAsking):
    pass


class _SentinelAskingSSLConnection(_SentinelAsking, redis.sentinel.SentinelManagedSSLConnection):
    pass


def async_redis_client(url: str, timeout_seconds: float | None = None) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (see the module docstring)."""
    address = redis_address(url)
    options = _bounded(timeout_seconds)
    if timeout_seconds is not None:
        options["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)
    if not address.sentinels:
        return redis.asyncio.Redis.from_url(url, **options)
    sentinels = redis.asyncio.sentinel.Sentinel(
        address.sentinels, sentinel_kwargs={**_bounded(timeout_seconds), **address.sentinel_options}
    )
    return sentinels.master_for(address.service, **address.options, **options)
