"""Turn a request body into a ValidatedBody, with HitKeep's checks in HitKeep's order.

Order (first failure decides): body (size, JSON object, then each field's type in the order of
the field table, ingest_api.fields; a field of the wrong type or a malformed UUID is
``Bad request body: <field> must be ...``) -> url -> timestamp -> visitor_ip -> user_agent ->
our extra bounds (referrer, language, screen and viewport sizes). Every limit comes from the
field table. Site and grant checks need the control plane and happen in the intake (ingest_api.intake).

Keys are matched to fields as HitKeep's Go decoder matches them (``fields_of``): an exact
name, else the same name in another case. Values the store cannot hold (times outside its
DateTime types, sizes beyond their UInt32 columns; shared.storable) are refused here, so
nothing answered 202 becomes a dead letter for being unstorable.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from ingest_api import errors
from ingest_api.errors import BadRequest
from ingest_api.fields import (
    AI_FETCH_BODY,
    EARLIEST_TIMESTAMP_MS,
    EVENT_BODY,
    LATEST_TIMESTAMP_MS,
    MAX_DIMENSION,
    MAX_FUTURE_HOURS,
    MIN_DIMENSION,
    PAGEVIEW_BODY,
    UNSTORABLE_TIMESTAMP,
    BodyField,
    JsonType,
    max_length,
    names,
)
from shared.envelope import FetchFacts, Kind, PropertyValue

MAX_BODY_BYTES = 64 * 1024
MAX_URL_CHARS = max_length(PAGEVIEW_BODY, "url")
MAX_USER_AGENT_CHARS = max_length(PAGEVIEW_BODY, "user_agent")
MAX_REFERRER_CHARS = max_length(PAGEVIEW_BODY, "referrer")
MAX_LANGUAGE_CHARS = max_length(PAGEVIEW_BODY, "language")
MAX_FUTURE_MS = MAX_FUTURE_HOURS * 3600 * 1000
DIMENSION_FIELDS = names(PAGEVIEW_BODY, JsonType.INTEGER)
PAGEVIEW_FIELDS = frozenset(names(PAGEVIEW_BODY))


class _UuidText:
    """Stands for a UUID's Python type in a type check: no decoded value has it, so every UUID
    that is present takes the check's second branch, which reads its form."""


_PYTHON_TYPE: dict[JsonType, type] = {
    JsonType.STRING: str,
    JsonType.UUID: _UuidText,
    JsonType.INTEGER: int,
    JsonType.BOOLEAN: bool,
}
TypeChecks = tuple[tuple[str, type], ...]
# What each type check's message says its field must be (pageview, event and AI-fetch fields alike).
_EXPECTED = {field.name: field.expected for field in (*EVENT_BODY, *AI_FETCH_BODY) if field.json_type in _PYTHON_TYPE}


def type_checks(body: tuple[BodyField, ...]) -> TypeChecks:
    """(name, the Python type its JSON value decodes to) of the body's fields with a plain JSON
    type, in table order: ``check_types`` runs them in it."""
    return tuple((field.name, _PYTHON_TYPE[field.json_type]) for field in body if field.json_type in _PYTHON_TYPE)


_PAGEVIEW_TYPE_CHECKS = type_checks(PAGEVIEW_BODY)

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
# The only characters outside ASCII that Go's case folding (unicode.SimpleFold orbits) maps
# onto an ASCII letter: KELVIN SIGN (k) and LATIN SMALL LETTER LONG S (s). Dotted and dotless
# i fold only to themselves in Go.
_GO_FOLDS_TO_ASCII = str.maketrans({"\u212a": "k", "\u017f": "s"})


@dataclass(slots=True)  # not frozen: a frozen __init__ costs twice as much on the hot path
class ValidatedBody:
    """A pageview, event or AI-fetch body (or batch item) that passed every check that needs
    no control-plane data. ``kind`` is its envelope's (shared.envelope.Kind): the check that
    made it says what it is."""

    url: str
    host: str  # the url's host, lower-cased, without port (not yet a site domain)
    timestamp_ms: int
    visitor_ip: str | None  # normalised; IPv4-mapped IPv6 unmapped; None only for an AI fetch
    user_agent: str  # trimmed
    page_id: str | None  # lower-case UUID, or None when the client sent none
    session_id: str | None
    referrer: str | None
    language: str | None
    dimensions: dict[str, int | None]  # DIMENSION_FIELDS -> value
    dnt: bool
    kind: Kind = "pageview"
    event_id: str | None = None  # events only (ingest_api.events): lower-case UUID or None
    event_name: str | None = None  # events only
    event_properties: dict[str, PropertyValue] = field(default_factory=dict)
    site_id: str | None = None  # AI fetches only: the site named in the request's path, not by the url
    fetch: FetchFacts | None = None  # AI fetches only (ingest_api.ai_fetch)


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


def json_value(body: bytes, decode: Callable[[bytes], Any] = decode_json) -> Any:
    """The body's JSON (an object is checked later, field by field), at most MAX_BODY_BYTES."""
    if not body or len(body) > MAX_BODY_BYTES:
        raise BadRequest()
    return decode(body)


def _int_like_orjson(text: str) -> int | float:
    number = int(text)
    return number if -(2**63) <= number < 2**64 else float(text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class KeyOrderNeeded(Exception):
    """Two keys of one object name the same field (``"url"`` and ``"URL"``): the later one in
    the document wins, and an orjson dict keeps a repeated key at its first place. Raised on
    that rare path only; the caller decodes the document again with ``decode_in_order``."""


class _InDocumentOrder(dict[str, Any]):
    """An object whose keys are in the order of their last occurrence in the document."""


def _in_document_order(pairs: list[tuple[str, Any]]) -> _InDocumentOrder:
    values = _InDocumentOrder()
    for key, value in pairs:
        values.pop(key, None)  # a repeated key moves to its last place, with its last value
        values[key] = value
    return values


def decode_in_order(document: bytes) -> Any:
    """``decode_json``'s value with every object's keys in the order they last occur in the
    document (the standard library's decoder: slower, used only after KeyOrderNeeded)."""
    try:
        return json.loads(
            document,
            object_pairs_hook=_in_document_order,
            parse_int=_int_like_orjson,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError):
        raise BadRequest() from None


def fields_of(decoded: Any, names: frozenset[str]) -> dict[str, Any]:
    """The object's values by field name, its keys matched as Go's encoding/json (HitKeep's
    decoder) matches them: an exact name, else a name equal under Go's case folding; other
    keys are ignored, and a later key for the same field overwrites an earlier one (null
    included). BadRequest when ``decoded`` is not an object.

    Exact keys, the usual case, cost one subset check and return the object itself."""
    if type(decoded) is dict:
        if names.issuperset(decoded):
            return decoded
    elif type(decoded) is not _InDocumentOrder:
        raise BadRequest()
    matched: dict[str, Any] = {}
    for key, value in decoded.items():
        name = key if key in names else go_folded(key)
        if name in names:
            if name in matched and type(decoded) is dict:
                raise KeyOrderNeeded()
            matched[name] = value
    return matched


def go_folded(key: str) -> str:
    """``key`` in a form that equals an ASCII field name exactly when Go's foldName(key)
    equals foldName(name): ASCII letters lower-cased, the two non-ASCII characters that fold
    onto ASCII letters replaced by them; any other non-ASCII character stays and so matches
    no field."""
    if not key.isascii():
        key = key.translate(_GO_FOLDS_TO_ASCII)
    return key.lower() if key.isascii() else key


def pageview_from(decoded: Any, now_ms: int) -> ValidatedBody:
    """Validate one decoded pageview (a request body, or a batch item)."""
    return pageview_of(fields_of(decoded, PAGEVIEW_FIELDS), now_ms)


def pageview_of(values: dict[str, Any], now_ms: int) -> ValidatedBody:
    """Validate the fields of one pageview (``fields_of``'s result)."""
    check_types(values, _PAGEVIEW_TYPE_CHECKS)
    url, host = _url(values.get("url"))
    timestamp_ms = checked_timestamp(values.get("timestamp"), now_ms)
    visitor_ip = checked_visitor_ip(values.get("visitor_ip"))
    user_agent = required_text(values.get("user_agent"), "user_agent", errors.MISSING_USER_AGENT, MAX_USER_AGENT_CHARS)
    referrer = _bounded_text(values, "referrer", MAX_REFERRER_CHARS)
    language = _bounded_text(values, "language", MAX_LANGUAGE_CHARS)
    return ValidatedBody(
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


def check_types(values: dict[str, Any], checks: TypeChecks) -> None:
    """Each checked field of the right type, in table order (null counts as absent); UUIDs
    lower-cased.

    Exact type checks: JSON decodes to plain str/int/bool (bool is an int subtype, not an int
    here), and ``type(x) is T`` costs a fraction of ``isinstance(x, T | None)`` on this hot path."""
    for name, python_type in checks:
        value = values.get(name)
        if value is not None and type(value) is not python_type:
            if python_type is _UuidText:
                values[name] = lower_uuid(value, name)
            else:
                raise BadRequest(errors.wrong_type(name, _EXPECTED[name]))


def lower_uuid(value: Any, name: str) -> str:
    """The UUID in lower case; BadRequest naming the field if ``value`` is not one."""
    if type(value) is not str or not _UUID.fullmatch(value):
        raise BadRequest(errors.wrong_type(name, "a UUID"))
    return value.lower()


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


def checked_timestamp(value: str | None, now_ms: int) -> int:
    """Milliseconds since the epoch. The pattern decides what is RFC 3339 (as strictly as Go);
    the standard library's C parser then reads it (3x faster than converting the fields here)
    and refuses impossible dates, times and offsets. Then at most 24 h ahead, and within what
    the store holds."""
    if not value or _RFC3339.fullmatch(value) is None:
        raise BadRequest(errors.BAD_TIMESTAMP)
    try:
        timestamp_ms = (datetime.fromisoformat(value) - _EPOCH) // _MILLISECOND
    except ValueError:
        raise BadRequest(errors.BAD_TIMESTAMP) from None
    if timestamp_ms > now_ms + MAX_FUTURE_MS:
        raise BadRequest(errors.FUTURE_TIMESTAMP)
    if not EARLIEST_TIMESTAMP_MS <= timestamp_ms <= LATEST_TIMESTAMP_MS:
        raise BadRequest(UNSTORABLE_TIMESTAMP)
    return timestamp_ms


def checked_visitor_ip(value: str | None) -> str:
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


def required_text(value: str | None, name: str, missing: str, limit: int) -> str:
    """``value`` (a string or None: its type is checked) trimmed; BadRequest ``missing`` when
    nothing is left, or naming the limit when it is longer."""
    text = (value or "").strip()
    if not text:
        raise BadRequest(missing)
    if len(text) > limit:
        raise BadRequest(errors.too_long(name, limit))
    return text


def _bounded_text(values: dict[str, Any], name: str, limit: int) -> str | None:
    value: str | None = values.get(name)
    if value is not None and len(value) > limit:
        raise BadRequest(errors.too_long(name, limit))
    return value or None


def _dimension(values: dict[str, Any], name: str) -> int | None:
    value: int | None = values.get(name)
    if value is not None and not MIN_DIMENSION <= value <= MAX_DIMENSION:
        raise BadRequest(errors.out_of_range(name, MIN_DIMENSION, MAX_DIMENSION))
    return value
