"""``POST /api/ingest/server/event`` bodies: a pageview body plus ``name``, ``properties`` and
an optional ``event_id``.

The pageview's checks run first, in their order (ingest_api.validation), then the event_id,
the name, the properties; the first failure decides and its message names the field. Keys
match fields as in a pageview body (``fields_of``: exact, else in another case); the keys
inside ``properties`` are data and are kept as sent.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

from ingest_api import errors
from ingest_api.errors import BadRequest
from ingest_api.validation import (
    PAGEVIEW_FIELDS,
    Pageview,
    checked_body,
    fields_of,
    lower_uuid,
    pageview_of,
)
from shared.envelope import PropertyValue

EVENT_FIELDS = PAGEVIEW_FIELDS | {"event_id", "name", "properties"}
MAX_NAME_CHARS = 200
MAX_PROPERTIES = 50
MAX_PROPERTY_KEY_CHARS = 128
MAX_PROPERTY_VALUE_CHARS = 1024
# A number beyond a double (1e309) decodes as infinity, which JSON cannot carry: the envelope
# would hold null and the worker would refuse it.
MAX_PROPERTY_NUMBER = sys.float_info.max
PROPERTY_NUMBER_RANGE = f"property numbers must be from {-MAX_PROPERTY_NUMBER!r} to {MAX_PROPERTY_NUMBER!r}"


def parse_event(body: bytes, now_ms: int) -> Pageview:
    """Validate one event body; raise BadRequest with the first failure's message."""
    return checked_body(body, now_ms, event_from)


def event_from(decoded: Any, now_ms: int) -> Pageview:
    values = fields_of(decoded, EVENT_FIELDS)
    pageview = pageview_of(values, now_ms)
    event_id = values.get("event_id")
    return dataclasses.replace(
        pageview,
        event_id=None if event_id is None else lower_uuid(event_id, "event_id"),
        event_name=_name(values.get("name")),
        event_properties=_properties(values.get("properties")),
    )


def _name(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise BadRequest(errors.wrong_type("name", "a string"))
    name = (value or "").strip()
    if not name:
        raise BadRequest(errors.MISSING_NAME)
    if len(name) > MAX_NAME_CHARS:
        raise BadRequest(errors.too_long("name", MAX_NAME_CHARS))
    return name


def _properties(value: Any) -> dict[str, PropertyValue]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(item, str | int | float) for item in value.values()):
        raise BadRequest(errors.BAD_PROPERTIES)  # bool is an int: flat values are exactly these
    if len(value) > MAX_PROPERTIES:
        raise BadRequest(f"properties must have at most {MAX_PROPERTIES} keys")
    for key, item in value.items():
        if len(key) > MAX_PROPERTY_KEY_CHARS:
            raise BadRequest(f"property keys must be at most {MAX_PROPERTY_KEY_CHARS} characters")
        if isinstance(item, str):
            if len(item) > MAX_PROPERTY_VALUE_CHARS:
                raise BadRequest(f"property values must be at most {MAX_PROPERTY_VALUE_CHARS} characters")
        elif type(item) is float and not math.isfinite(item):
            raise BadRequest(PROPERTY_NUMBER_RANGE)
    return value
