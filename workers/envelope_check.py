"""The worker's check of a decoded envelope's field types and ranges, before the pipeline.

The API only queues envelopes it built from validated requests, but the stream can also hold
entries from an older API, a hand-written ``XADD`` or a requeued dead letter. An envelope
that decodes yet carries a wrong type (a ``language`` that is a number, a ``screen_width`` of
2^40, a ``site_id`` that is no UUID) would break a pipeline step or be refused by the store;
``check_envelope`` finds it first, so it becomes a dead letter (step "envelope") and never
reaches an insert. Ranges come from shared/storable.py, the store's column types.

Errors name the field (a property by its key) and what it must be, never its value (a field
may hold the visitor IP).
"""

from __future__ import annotations

import re
from typing import Any

from shared.envelope import ENVELOPE_VERSION, Envelope
from shared.storable import (
    BYTES_SERVED_COLUMN_TYPE,
    DIMENSION_COLUMN_TYPE,
    INTEGER_RANGES,
    RESPONSE_MS_COLUMN_TYPE,
    STATUS_CODE_RANGE,
    TIME_RANGES_MS,
    TIMESTAMP_RANGE_MS,
)

# ClickHouse's UUID columns read this text form (the API writes UUIDs lower-case, dashed).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_FIELDS = ("site_id", "page_id", "session_id")
_TEXT_FIELDS = ("site_domain", "url", "user_agent")
_OPTIONAL_TEXT_FIELDS = ("visitor_ip", "referrer", "language", "event_name")
_DIMENSION_FIELDS = ("screen_width", "screen_height", "viewport_width", "viewport_height")
_DIMENSION_RANGE = INTEGER_RANGES[DIMENSION_COLUMN_TYPE]
# received_ms lands in received_at, a DateTime64(3, 'UTC') column.
_RECEIVED_RANGE_MS = TIME_RANGES_MS["DateTime64(3, 'UTC')"]
_KINDS = ("pageview", "event", "ai_fetch")
_PROPERTY_TYPES = (str, int, float, bool)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _whole_number(name: str, value: Any, bounds: tuple[int, int], unit: str = "") -> None:
    # bool is an int subclass, but true is no size or time.
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer, not {_type_name(value)}")
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}{unit}")


def check_envelope(envelope: Envelope) -> None:
    """Raise ValueError naming the first field whose type or range the store cannot hold."""
    for name in _UUID_FIELDS:
        value = getattr(envelope, name)
        if type(value) is not str or not _UUID.fullmatch(value):
            raise ValueError(f"{name} must be a UUID string, not {_type_name(value)}")
    for name in _TEXT_FIELDS:
        if type(value := getattr(envelope, name)) is not str:
            raise ValueError(f"{name} must be a string, not {_type_name(value)}")
    for name in _OPTIONAL_TEXT_FIELDS:
        value = getattr(envelope, name)
        if value is not None and type(value) is not str:
            raise ValueError(f"{name} must be a string or null, not {_type_name(value)}")
    _whole_number("timestamp_ms", envelope.timestamp_ms, TIMESTAMP_RANGE_MS, " ms since the epoch")
    _whole_number("received_ms", envelope.received_ms, _RECEIVED_RANGE_MS, " ms since the epoch")
    for name in _DIMENSION_FIELDS:
        if (value := getattr(envelope, name)) is not None:
            _whole_number(name, value, _DIMENSION_RANGE)
    if envelope.kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
    properties = envelope.event_properties
    if type(properties) is not dict:
        raise ValueError(f"event_properties must be an object, not {_type_name(properties)}")
    for key, value in properties.items():
        if type(value) not in _PROPERTY_TYPES:
            raise ValueError(f"event_properties[{key!r}] must be a string, number or boolean, not {_type_name(value)}")
    _check_fetch(envelope)
    if type(envelope.v) is not int or envelope.v != ENVELOPE_VERSION:
        raise ValueError(f"v must be {ENVELOPE_VERSION} (the envelope version this worker reads)")


def _check_fetch(envelope: Envelope) -> None:
    """An AI fetch carries its server's facts (shared.envelope.FetchFacts); nothing else does."""
    fetch: Any = envelope.fetch
    if envelope.kind != "ai_fetch":
        if fetch is not None:
            raise ValueError("fetch must be null for a pageview or event")
        return
    if type(fetch) is not dict:
        raise ValueError(f"fetch must be an object for an ai_fetch, not {_type_name(fetch)}")
    _whole_number("fetch.status_code", fetch.get("status_code"), STATUS_CODE_RANGE)
    content_type = fetch.get("content_type")
    if content_type is not None and type(content_type) is not str:
        raise ValueError(f"fetch.content_type must be a string or null, not {_type_name(content_type)}")
    for name, column_type in (("response_ms", RESPONSE_MS_COLUMN_TYPE), ("bytes_served", BYTES_SERVED_COLUMN_TYPE)):
        if (value := fetch.get(name)) is not None:
            _whole_number(f"fetch.{name}", value, INTEGER_RANGES[column_type])
