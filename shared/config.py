"""Settings read from ``HITSTREAM_*`` environment variables.

Every process (API, worker, CLI) reads the same variables. A bad value stops start-up with a
``ConfigError`` whose message names the variable, so an operator knows what to fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.durability import Durability
from shared.redis_client import redis_address

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CLICKHOUSE_URL = "chdb://./var/chdb"


class ConfigError(ValueError):
    """A HITSTREAM_* variable holds a value hitstream cannot use."""


@dataclass(frozen=True)
class Settings:
    # One server (redis://, rediss://, unix://, redis-py's URL options) or a Sentinel service
    # (redis+sentinel://host1:26379,host2:26379/SERVICE/DB; shared.redis_client reads it).
    redis_url: str = DEFAULT_REDIS_URL
    clickhouse_url: str = DEFAULT_CLICKHOUSE_URL
    geoip_city_db: Path | None = None
    geoip_asn_db: Path | None = None
    # The crawler ranges document ``hitstream crawlers update`` writes (shared.crawlers.ranges);
    # None, or a file that does not exist yet: the snapshot vendored with hitstream.
    crawler_ranges: Path | None = None
    # Per-token token bucket shared by every API process: sustained requests/s and burst.
    rate_limit: float = 100.0
    rate_burst: int = 200
    # Backpressure: above this many queued (unacknowledged) pageviews the API answers 503.
    # Unset, both caps are derived from Redis's maxmemory at start when it has one
    # (shared.queue_caps), never above these defaults.
    queue_max_depth: int = 1_000_000
    # The bulk lane's own cap (replays: shared.lanes); past it only bulk requests get 503.
    bulk_queue_max_depth: int = 2_000_000
    # The fraction of a lane's cap one token's entries may fill, so one customer's backlog
    # leaves room for others (0.25: four tokens fill a lane, a fifth waits for room).
    token_queue_share: float = 0.25
    # The fraction of claimed batches that go to the bulk lane while live traffic waits too.
    bulk_min_share: float = 0.1
    # How long the API waits for Redis before answering 503.
    redis_timeout_ms: int = 250
    # How long a worker's Redis command keeps reconnecting before it fails (shared.redis_client):
    # longer than a Sentinel failover or a Redis restart.
    worker_redis_patience_seconds: float = 15.0
    # What a 202 promises (shared.durability): fsynced in Redis's AOF, also on replicas, or
    # only in Redis's memory.
    durability: Durability = Durability.FSYNC
    # replicated: the replicas that must acknowledge a write (WAIT) before its 202, and how
    # long the API waits for them before answering 503 (below redis_timeout_ms, which bounds
    # the whole call).
    min_replicas: int = 1
    replica_timeout_ms: int = 100
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # How long API processes and workers may serve control-plane data from memory.
    control_cache_seconds: float = 2.0
    batch_size: int = 1000
    # A claimed batch whose worker stopped heart-beating returns to work after this long.
    claim_timeout_seconds: float = 60.0
    spamhaus_drop_file: Path | None = None
    referrer_spam_file: Path | None = None
    idempotency_window_seconds: int = 86_400
    log_level: str = "INFO"
    # Start even on a Redis whose maxmemory-policy evicts keys (shared.redis_safety).
    allow_unsafe_redis: bool = False
    # Workers have Redis rewrite its AOF (and RDB snapshot) once this many queued pageviews
    # were processed, or this long after the last rewrite, so the visitor IPs of processed
    # pageviews leave Redis's files (workers.host.redis_rewrite).
    rewrite_after_entries: int = 1_000_000
    rewrite_after_seconds: float = 3600.0
    # Per API process (ingest_api.connections): open connections, and how long a request's
    # head and then its body may take to arrive.
    max_connections: int = 1000
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    # Where ``hitstream worker`` serves its host's worker metrics (Prometheus text); None: nowhere.
    worker_metrics_port: int | None = None
    # The address it listens on: loopback unless the operator opens it (as ``hitstream api --host``),
    # e.g. 0.0.0.0 in a container that Prometheus scrapes from outside.
    worker_metrics_host: str = "127.0.0.1"
    # The HITSTREAM_* variables the environment set; every other field holds its default.
    variables_set: frozenset[str] = frozenset()


def _text(value: str) -> str:
    return value


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError("must be a positive number")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _flag(value: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if value.lower() not in words:
        raise ValueError("must be 1, true, yes, 0, false or no")
    return words[value.lower()]


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise ValueError("must be a number above 0 and at most 1")
    return number


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return number


# One label of a host name (RFC 1123): letters, digits and inner hyphens, at most 63 characters.
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _listen_host(value: str) -> str:
    """An IP address or a host name to listen on (checked here; resolved when listening)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    # A last label of digits only is a malformed IP address (256.1.1.1), not a host name.
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError("must be an IP address (e.g. 127.0.0.1, 0.0.0.0, ::) or a host name")
    return value


def _durability(value: str) -> Durability:
    try:
        return Durability(value.lower())
    except ValueError:
        raise ValueError(f"must be one of {', '.join(Durability)}") from None


def _redis_url(value: str) -> str:
    redis_address(value)  # one server or a Sentinel service (shared.redis_client); ValueError says why not
    return value


def _clickhouse_url(value: str) -> str:
    if not value.startswith(("chdb://", "http://", "https://", "clickhouse://")):
        raise ValueError("must start with chdb://, http:// or https://")
    return value


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


# variable name -> (Settings field, parser)
_VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "HITSTREAM_REDIS_URL": ("redis_url", _redis_url),
    "HITSTREAM_CLICKHOUSE_URL": ("clickhouse_url", _clickhouse_url),
    "HITSTREAM_GEOIP_CITY_DB": ("geoip_city_db", _text),
    "HITSTREAM_GEOIP_ASN_DB": ("geoip_asn_db", _text),
    "HITSTREAM_CRAWLER_RANGES": ("crawler_ranges", _text),
    "HITSTREAM_RATE_LIMIT": ("rate_limit", _positive_float),
    "HITSTREAM_RATE_BURST": ("rate_burst", _positive_int),
    "HITSTREAM_QUEUE_MAX_DEPTH": ("queue_max_depth", _positive_int),
    "HITSTREAM_BULK_QUEUE_MAX_DEPTH": ("bulk_queue_max_depth", _positive_int),
    "HITSTREAM_TOKEN_QUEUE_SHARE": ("token_queue_share", _fraction),
    "HITSTREAM_BULK_MIN_SHARE": ("bulk_min_share", _fraction),
    "HITSTREAM_REDIS_TIMEOUT_MS": ("redis_timeout_ms", _positive_int),
    "HITSTREAM_WORKER_REDIS_PATIENCE": ("worker_redis_patience_seconds", _positive_float),
    "HITSTREAM_DURABILITY": ("durability", _durability),
    "HITSTREAM_MIN_REPLICAS": ("min_replicas", _positive_int),
    "HITSTREAM_REPLICA_TIMEOUT_MS": ("replica_timeout_ms", _positive_int),
    "HITSTREAM_TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "HITSTREAM_CONTROL_CACHE_SECONDS": ("control_cache_seconds", _positive_float),
    "HITSTREAM_BATCH_SIZE": ("batch_size", _positive_int),
    "HITSTREAM_CLAIM_TIMEOUT": ("claim_timeout_seconds", _positive_float),
    "HITSTREAM_SPAMHAUS_DROP_FILE": ("spamhaus_drop_file", _existing_file),
    "HITSTREAM_REFERRER_SPAM_FILE": ("referrer_spam_file", _existing_file),
    "HITSTREAM_IDEMPOTENCY_WINDOW": ("idempotency_window_seconds", _positive_int),
    "HITSTREAM_LOG_LEVEL": ("log_level", _log_level),
    "HITSTREAM_ALLOW_UNSAFE_REDIS": ("allow_unsafe_redis", _flag),
    "HITSTREAM_REWRITE_AFTER_ENTRIES": ("rewrite_after_entries", _positive_int),
    "HITSTREAM_REWRITE_AFTER_SECONDS": ("rewrite_after_seconds", _positive_float),
    "HITSTREAM_MAX_CONNECTIONS": ("max_connections", _positive_int),
    "HITSTREAM_HEADER_TIMEOUT": ("header_timeout_seconds", _positive_float),
    "HITSTREAM_BODY_TIMEOUT": ("body_timeout_seconds", _positive_float),
    "HITSTREAM_WORKER_METRICS_PORT": ("worker_metrics_port", _port),
    "HITSTREAM_WORKER_METRICS_HOST": ("worker_metrics_host", _listen_host),
}


VARIABLE_NAMES: tuple[str, ...] = tuple(_VARIABLES)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise ConfigError naming the first bad variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    variables_set = set()
    for name, (attribute, parse) in _VARIABLES.items():
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[attribute] = parse(raw.strip())
        except ValueError as error:
            raise ConfigError(f"{name}={raw!r} is invalid: {error}") from None
        variables_set.add(name)
    values["variables_set"] = frozenset(variables_set)
    # GeoIP and crawler-range paths are optional and a missing file must not stop start-up
    # (the worker warns once and leaves geo fields empty; crawlers are verified with the
    # vendored snapshot until the file appears), so they are kept as plain paths.
    for attribute in ("geoip_city_db", "geoip_asn_db", "crawler_ranges"):
        if attribute in values:
            values[attribute] = Path(str(values[attribute])).expanduser()
    settings = Settings(**values)  # type: ignore[arg-type]
    replicated = settings.durability is Durability.REPLICATED
    if replicated and settings.replica_timeout_ms >= settings.redis_timeout_ms:
        raise ConfigError(
            f"HITSTREAM_REPLICA_TIMEOUT_MS={settings.replica_timeout_ms} is invalid: must be below "
            f"HITSTREAM_REDIS_TIMEOUT_MS ({settings.redis_timeout_ms}), which bounds the whole hand-off"
        )
    return settings
