"""The fields of a pageview body, an event body and an AI-fetch body, in one table each.

A row says a field's name, JSON type, whether it is required, its limits, what it means and an
example value. The checks (ingest_api.validation, ingest_api.events) take from it the order
and the expected types of the type checks and every limit; the OpenAPI document
(ingest_api.openapi) takes the Pageview and Event schemas, their required lists and examples.
What makes a value valid beyond its type and limits (an absolute URL, RFC 3339, an IP address)
stays in the checks, which name each rule's message.

Row order is check order: the type checks run in table order, so with two fields of the wrong
type the first row's field is named.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest_api import errors
from shared.storable import (
    DIMENSION_COLUMN_TYPE,
    INTEGER_RANGES,
    RESPONSE_MS_COLUMN_TYPE,
    STATUS_CODE_RANGE,
    TIMESTAMP_RANGE_MS,
)


class JsonType(enum.StrEnum):
    """A field's JSON type; a UUID is a string of the canonical 8-4-4-4-12 form."""

    STRING = "string"
    UUID = "uuid"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    OBJECT = "object"


# What a type check's message says a field must be (errors.wrong_type).
EXPECTED = {
    JsonType.STRING: "a string",
    JsonType.UUID: "a UUID",
    JsonType.INTEGER: "an integer",
    JsonType.BOOLEAN: "a boolean",
}
_SCHEMA_TYPE = {JsonType.UUID: JsonType.STRING}  # OpenAPI spells a UUID as a string format


@dataclass(frozen=True, slots=True)
class BodyField:
    """One field of a request body. ``None`` limits are no limit; ``schema`` holds the OpenAPI
    keywords the other columns do not say (a format, nested limits)."""

    name: str
    json_type: JsonType
    description: str = ""
    required: bool = False
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    example: Any = None  # None: not in the body's example
    schema: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def expected(self) -> str:
        """What the field's type check says it must be."""
        return EXPECTED[self.json_type]


MAX_FUTURE_HOURS = 24
# The instants every column a pageview's time lands in can hold (1970 to 2106).
EARLIEST_TIMESTAMP_MS, LATEST_TIMESTAMP_MS = TIMESTAMP_RANGE_MS
UNSTORABLE_TIMESTAMP = errors.time_out_of_range(
    "timestamp",
    *(
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
        for ms in TIMESTAMP_RANGE_MS
    ),
)
# Sizes: what their UInt32 columns hold, capped at 100000 (wider than any screen).
MIN_DIMENSION = INTEGER_RANGES[DIMENSION_COLUMN_TYPE][0]
MAX_DIMENSION = min(100_000, INTEGER_RANGES[DIMENSION_COLUMN_TYPE][1])
MAX_PROPERTIES = 50
MAX_PROPERTY_KEY_CHARS = 128
MAX_PROPERTY_VALUE_CHARS = 1024
# A number beyond a double (1e309) decodes as infinity, which JSON cannot carry: the envelope
# would hold null and the worker would refuse it.
MAX_PROPERTY_NUMBER = sys.float_info.max


def _uuid_rule(name: str) -> str:
    return (
        "Optional UUID (8-4-4-4-12 hex, any case); generated when absent or null. "
        f"Anything else answers 400 `{errors.wrong_type(name, EXPECTED[JsonType.UUID])}`."
    )


_WINDOW = "within the idempotency window (HITSTREAM_IDEMPOTENCY_WINDOW, default 24 h)"


def _dimension(name: str, example: int | None = None) -> BodyField:
    what = name.replace("_", " ")
    return BodyField(
        name,
        JsonType.INTEGER,
        f"The visitor's {what} in pixels.",
        minimum=MIN_DIMENSION,
        maximum=MAX_DIMENSION,
        example=example,
    )


PAGEVIEW_BODY: tuple[BodyField, ...] = (
    BodyField(
        "url",
        JsonType.STRING,
        "Absolute http(s) URL; its host (lower-cased, port, trailing dot and one leading `www.` "
        "removed, IDNA-encoded) selects the site. UTM values and hk_qr are read from its query string.",
        required=True,
        max_length=4096,
        example="https://example.com/pricing?utm_source=newsletter",
        schema={"format": "uri"},
    ),
    BodyField(
        "timestamp",
        JsonType.STRING,
        f"RFC 3339 (`T`, seconds, optional fraction, `Z` or `±HH:MM`); at most {MAX_FUTURE_HOURS} "
        "hours in the future. Past times are accepted (replay) back to the epoch, the earliest the "
        f"store holds: otherwise 400 `{UNSTORABLE_TIMESTAMP}`.",
        required=True,
        example="2026-04-15T12:00:00Z",
        schema={"format": "date-time"},
    ),
    BodyField(
        "visitor_ip",
        JsonType.STRING,
        "The visitor's IPv4 or IPv6 address (no port, no zone). Used for exclusions, spam checks "
        "and geo lookup, never stored.",
        required=True,
        example="203.0.113.7",
        schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    ),
    BodyField(
        "user_agent",
        JsonType.STRING,
        "The visitor's user agent; must not be empty after trimming.",
        required=True,
        min_length=1,
        max_length=2048,
        example="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    ),
    BodyField(
        "referrer",
        JsonType.STRING,
        "The page the visitor came from; its host is checked against the referrer-spam list.",
        max_length=2048,
        example="https://news.example.org/",
    ),
    BodyField("language", JsonType.STRING, "The visitor's preferred language.", max_length=64, example="en-GB"),
    BodyField(
        "page_id",
        JsonType.UUID,
        f"{_uuid_rule('page_id')} A pageview with a page_id sent again {_WINDOW} is answered 202 and stored once.",
    ),
    BodyField("session_id", JsonType.UUID, _uuid_rule("session_id")),
    _dimension("screen_width", 1920),
    _dimension("screen_height", 1080),
    _dimension("viewport_width"),
    _dimension("viewport_height"),
    BodyField("dnt", JsonType.BOOLEAN, "When true the pageview is answered 202 and not recorded."),
)

EVENT_BODY: tuple[BodyField, ...] = (
    *(
        dataclasses.replace(
            field,
            description="The page the event happened on: the page_id of its pageview, if the client "
            f"chose one. {_uuid_rule('page_id')}",
        )
        if field.name == "page_id"
        else field
        for field in PAGEVIEW_BODY
    ),
    BodyField(
        "event_id",
        JsonType.UUID,
        "Optional UUID naming this event (used to recognise retries, not stored). Two events are the "
        "same when both carry the same event_id, or, without event_id, the same page_id and the same "
        f"trimmed name; the same event sent again {_WINDOW} is answered 202 and stored once. Send "
        f"event_id when one page can have several events of one name. {_uuid_rule('event_id')}",
    ),
    BodyField(
        "name",
        JsonType.STRING,
        "The event's name; trimmed, must not be empty.",
        required=True,
        min_length=1,
        max_length=200,
        example="signup",
    ),
    BodyField(
        "properties",
        JsonType.OBJECT,
        "Flat; stored as a Map(String, String) (booleans as true/false, numbers as their JSON text). "
        "Numbers must fit a double; integers beyond 64 bits are read as doubles.",
        example={"plan": "pro", "seats": 3},
        schema={
            "maxProperties": MAX_PROPERTIES,
            "propertyNames": {"maxLength": MAX_PROPERTY_KEY_CHARS},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_PROPERTY_VALUE_CHARS},
                    {"type": "number", "minimum": -MAX_PROPERTY_NUMBER, "maximum": MAX_PROPERTY_NUMBER},
                    {"type": "boolean"},
                ]
            },
        },
    ),
)


# What an edge or origin server reports of a crawler's request (HitKeep's AI-fetch fields, then
# ours). The response time's column is a UInt32; the size's a UInt64, bounded by Go's int64 as
# HitKeep decodes it. HitKeep reads a time or size of 0 or less as not reported.
MAX_RESPONSE_MS = INTEGER_RANGES[RESPONSE_MS_COLUMN_TYPE][1]
MAX_BYTES_SERVED = 2**63 - 1
_NOT_REPORTED = "0 or less (or absent) means not reported."

AI_FETCH_BODY: tuple[BodyField, ...] = (
    BodyField(
        "path",
        JsonType.STRING,
        "The path the crawler asked for, with its query (`/guides/ai?from=bot`), or an absolute URL "
        "whose host stands in for a missing `hostname` (its fragment is dropped). Trimmed; a path "
        f"without a leading `/` gets one. Empty: 400 `{errors.MISSING_PATH}`.",
        required=True,
        max_length=4096,
        example="/guides/ai?from=bot",
    ),
    BodyField(
        "hostname",
        JsonType.STRING,
        "The host the crawler asked (trimmed, lower-cased); optional.",
        max_length=253,
        example="docs.example.com",
    ),
    BodyField(
        "status_code",
        JsonType.INTEGER,
        f"The HTTP status the server answered; outside {STATUS_CODE_RANGE[0]}-{STATUS_CODE_RANGE[1]} "
        f"(absent included): 400 `{errors.BAD_STATUS_CODE}`.",
        required=True,
        example=200,
        # In the schema only: the check answers HitKeep's message, not a range naming the field.
        schema={"minimum": STATUS_CODE_RANGE[0], "maximum": STATUS_CODE_RANGE[1]},
    ),
    BodyField(
        "content_type",
        JsonType.STRING,
        "The answer's Content-Type; its media type decides the resource type (html when absent, "
        "image, document, other).",
        max_length=255,
        example="text/html; charset=utf-8",
    ),
    BodyField(
        "response_ms",
        JsonType.INTEGER,
        f"How long the answer took, in ms. {_NOT_REPORTED}",
        maximum=MAX_RESPONSE_MS,
        example=184,
    ),
    BodyField(
        "bytes_served",
        JsonType.INTEGER,
        f"The answer's size in bytes. {_NOT_REPORTED}",
        maximum=MAX_BYTES_SERVED,
        example=4096,
    ),
    BodyField(
        "user_agent",
        JsonType.STRING,
        "The crawler's user agent, trimmed: it must name a crawler hitstream knows (any of the crawler "
        f"table's, not only HitKeep's 22 AI bots), else 400 `{errors.UNKNOWN_CRAWLER}`.",
        required=True,
        max_length=2048,
        example="Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    ),
    BodyField(
        "timestamp",
        JsonType.STRING,
        "Ours: when the crawler asked (RFC 3339, as a pageview's), so edge logs can be replayed; "
        "absent: when hitstream received it.",
        example="2026-04-15T12:00:00Z",
        schema={"format": "date-time"},
    ),
    BodyField(
        "visitor_ip",
        JsonType.STRING,
        "Ours: the crawler's IPv4 or IPv6 address. With it the crawler is verified against its "
        "operator's published ranges (verified or spoofed), exclusions by address and country and "
        "the Spamhaus DROP list apply, and its country and network are kept; without it the hit "
        "is unverifiable. Never stored.",
        example="132.196.86.7",
        schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    ),
    BodyField(
        "fetch_id",
        JsonType.UUID,
        f"Ours: {_uuid_rule('fetch_id')} A fetch with a fetch_id sent again {_WINDOW} is answered 202 and stored once.",
    ),
)


def max_length(body: tuple[BodyField, ...], name: str) -> int:
    """The field's maximum length, for a check that needs one."""
    for field in body:
        if field.name == name and field.max_length is not None:
            return field.max_length
    raise LookupError(f"{name} is not a field with a maximum length")


def names(body: tuple[BodyField, ...], json_type: JsonType | None = None) -> tuple[str, ...]:
    """The body's field names in table order, all or those of one type."""
    return tuple(field.name for field in body if json_type is None or field.json_type is json_type)


def body_schema(body: tuple[BodyField, ...], description: str) -> dict[str, Any]:
    """The OpenAPI 3.1 schema of a body: a field that is not required may also be null (null
    means absent)."""
    return {
        "type": "object",
        "description": description,
        "required": [field.name for field in body if field.required],
        "properties": {field.name: _field_schema(field) for field in body},
        "example": {field.name: field.example for field in body if field.example is not None},
    }


def _field_schema(field: BodyField) -> dict[str, Any]:
    json_type = _SCHEMA_TYPE.get(field.json_type, field.json_type).value
    schema: dict[str, Any] = {"type": json_type if field.required else [json_type, "null"]}
    if field.json_type is JsonType.UUID:
        schema["format"] = "uuid"
    limits = {
        "minLength": field.min_length,
        "maxLength": field.max_length,
        "minimum": field.minimum,
        "maximum": field.maximum,
    }
    schema.update((keyword, limit) for keyword, limit in limits.items() if limit is not None)
    schema.update(field.schema)
    if field.description:
        schema["description"] = field.description
    return schema
