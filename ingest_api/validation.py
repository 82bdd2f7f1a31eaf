"""Turn a request body into a validated pageview, with HitKeep's checks in HitKeep's order.

Order (first failure decides): body (size, JSON object, field types, UUIDs; a field of the
wrong type is ``Bad request body: <field> must be ...``) -> url ->
timestamp -> visitor_ip -> user_agent -> our extra bounds (referrer, language, screen and
viewport sizes). Site and grant checks need the control plane and happen in the route.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from ingest_api import errors
from ingest_api.errors import BadRequest
from shared.envelope import PropertyValue

MAX_BODY_BYTES = 64 * 1024
MAX_URL_CHARS = 4096
MAX_USER_AGENT_CHARS = 2048
MAX_REFERRER_CHARS = 2048
MAX_LANGUAGE_CHARS = 64
MAX_DIMENSION = 100_000
MAX_FUTURE_MS = 24 * 3600 * 1000

_STRING_FIELDS = ("url", "timestamp", "visitor_ip", "user_agent", "referrer", "language")
_UUID_FIELDS = ("page_id", "session_id")
DIMENSION_FIELDS = ("screen_width", "screen_height", "viewport_width", "viewport_height")

# Canonical 8-4-4-4-12 form, any case (HitKeep's own example is upper case).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# RFC 3339 as Go's time.RFC3339 parses it: upper-case T and Z, seconds required, any fraction.
# Offset minutes are bounded here: datetime.fromisoformat would carry 60-99 into the hours.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:[0-5]\d)", re.ASCII)
# Control characters and spaces: Go's url.Parse refuses them, Python's urlsplit silently drops some.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs twice as much on the hot path
class Pageview:
    """A pageview request that passed every check that needs no control-plane data."""

    url: str
    host: str  # the url's host, lower-cased, without port (not yet a site domain)
    timestamp_ms: int
    visitor_ip: str  # normalised; IPv4-mapped IPv6 unmapped
    user_agent: str  # trimmed
    page_id: str | None  # lower-case UUID, or None when the client sent none
    session_id: str | None
    referrer: str | None
    language: str | None
    dimensions: dict[str, int | None]  # DIMENSION_FIELDS -> value
    dnt: bool
    event_name: str | None = None  # events only (ingest_api.events)
    event_properties: dict[str, PropertyValue] = field(default_factory=dict)


def parse_pageview(body: bytes, now_ms: int) -> Pageview:
    """Validate one pageview body; raise BadRequest with the first failure's message."""
    return pageview_from(json_value(body), now_ms)


def json_value(body: bytes) -> Any:
    """The body's JSON (an object is checked later, field by field), at most MAX_BODY_BYTES."""
    if not body or len(body) > MAX_BODY_BYTES:
        raise BadRequest()
    return decode_json(body)


def decode_json(document: bytes) -> Any:
    """The JSON value of ``document``; BadRequest (``Bad request body``) if it is not JSON.

    orjson refuses numbers beyond a double (``1e400``, ``1`` and 400 zeros); they are still
    JSON, so on that path (errors only) the standard library decodes the document with such
    numbers as floats (orjson's own choice for integers beyond 64 bits), and the field check
    then names the field."""
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(document, parse_int=_int_like_orjson, parse_constant=_refuse_constant)
        json.dumps(value, ensure_ascii=False).encode()  # lone surrogates: not UTF-8, not JSON
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        raise BadRequest() from None
    return value


def _int_like_orjson(text: str) -> int | float:
    number = int(text)
    return number if -(2**63) <= number < 2**64 else float(text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def pageview_from(decoded: Any, now_ms: int) -> Pageview:
    """Validate one decoded pageview (a request body, or a batch item)."""
    values = _typed_object(decoded)
    url, host = _url(values.get("url"))
    timestamp_ms = _timestamp(values.get("timestamp"), now_ms)
    visitor_ip = _visitor_ip(values.get("visitor_ip"))
    user_agent = _user_agent(values.get("user_agent"))
    referrer = _bounded_text(values, "referrer", MAX_REFERRER_CHARS)
    language = _bounded_text(values, "language", MAX_LANGUAGE_CHARS)
    return Pageview(
        url=url,
        host=host,
        timestamp_ms=timestamp_ms,
        visitor_ip=visitor_ip,
        user_agent=user_agent,
        page_id=values.get("page_id"),
        session_id=values.get("session_id"),
        referrer=referrer,
        language=language,
        dimensions={name: _dimension(values, name) for name in DIMENSION_FIELDS},
        dnt=values.get("dnt") is True,
    )


def _typed_object(values: Any) -> dict[str, Any]:
    """A JSON object with every known field of the right type (null counts as absent).

    Exact type checks: JSON decodes to plain str/int/bool, and ``type(x) is T`` costs a
    fraction of ``isinstance(x, T | None)`` on this hot path."""
    if type(values) is not dict:
        raise BadRequest()
    for name in _STRING_FIELDS:
        value = values.get(name)
        if value is not None and type(value) is not str:
            raise BadRequest(errors.wrong_type(name, "a string"))
    for name in _UUID_FIELDS:
        value = values.get(name)
        if value is not None:
            if type(value) is not str or not _UUID.fullmatch(value):
                raise BadRequest(errors.wrong_type(name, "a UUID"))
            values[name] = value.lower()
    for name in DIMENSION_FIELDS:
        value = values.get(name)
        if value is not None and type(value) is not int:  # bool is an int subtype, not an int
            raise BadRequest(errors.wrong_type(name, "an integer"))
    dnt = values.get("dnt")
    if dnt is not None and type(dnt) is not bool:
        raise BadRequest(errors.wrong_type("dnt", "a boolean"))
    return values


def _url(value: str | None) -> tuple[str, str]:
    if not value:
        raise BadRequest(errors.BAD_URL)
    if len(value) > MAX_URL_CHARS:
        raise BadRequest(errors.too_long("url", MAX_URL_CHARS))
    if _URL_FORBIDDEN.search(value):
        raise BadRequest(errors.BAD_URL)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise BadRequest(errors.BAD_URL) from None
    host = parts.hostname
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise BadRequest(errors.BAD_URL)
    return value, host


def _timestamp(value: str | None, now_ms: int) -> int:
    """Milliseconds since the epoch. The pattern decides what is RFC 3339 (as strictly as Go);
    the standard library's C parser then reads it (3x faster than converting the fields here)
    and refuses impossible dates, times and offsets."""
    if not value or _RFC3339.fullmatch(value) is None:
        raise BadRequest(errors.BAD_TIMESTAMP)
    try:
        timestamp_ms = (datetime.fromisoformat(value) - _EPOCH) // _MILLISECOND
    except ValueError:
        raise BadRequest(errors.BAD_TIMESTAMP) from None
    if timestamp_ms > now_ms + MAX_FUTURE_MS:
        raise BadRequest(errors.FUTURE_TIMESTAMP)
    return timestamp_ms


def _visitor_ip(value: str | None) -> str:
    """The address in its normal text form. inet_pton (C, strict like Go's parser) refuses
    ports, CIDR suffixes, zones and IPv4 octets with leading zeros, at a tenth of the cost
    of the ipaddress module. Only IPv6 text holds a colon, so one family is tried."""
    value = value or ""
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        packed = socket.inet_pton(family, value)
    except (OSError, ValueError):  # ValueError: NUL or non-ASCII characters
        raise BadRequest(errors.BAD_VISITOR_IP) from None
    if family == socket.AF_INET6 and packed.startswith(_IPV4_MAPPED_PREFIX):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(family, packed)


def _user_agent(value: str | None) -> str:
    user_agent = (value or "").strip()
    if not user_agent:
        raise BadRequest(errors.MISSING_USER_AGENT)
    if len(user_agent) > MAX_USER_AGENT_CHARS:
        raise BadRequest(errors.too_long("user_agent", MAX_USER_AGENT_CHARS))
    return user_agent


def _bounded_text(values: dict[str, Any], name: str, limit: int) -> str | None:
    value: str | None = values.get(name)
    if value is not None and len(value) > limit:
        raise BadRequest(errors.too_long(name, limit))
    return value or None


def _dimension(values: dict[str, Any], name: str) -> int | None:
    value: int | None = values.get(name)
    if value is not None and not 0 <= value <= MAX_DIMENSION:
        raise BadRequest(errors.out_of_range(name, 0, MAX_DIMENSION))
    return value
