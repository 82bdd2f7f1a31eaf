"""``POST /api/ingest/server/event`` bodies: a pageview body plus ``name``, ``properties`` and
an optional ``event_id``.

The pageview's checks run first, in their order (ingest_api.validation), then the event_id,
the name, the properties, with their limits from the field table (ingest_api.fields); the
first failure decides and its message names the field. Keys match fields as in a pageview
body (``fields_of``: exact, else in another case); the keys inside ``properties`` are data
and are kept as sent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ingest_api import errors
from ingest_api.errors import BadRequest
from ingest_api.fields import (
    EVENT_BODY,
    MAX_PROPERTIES,
    MAX_PROPERTY_KEY_CHARS,
    MAX_PROPERTY_NUMBER,
    MAX_PROPERTY_VALUE_CHARS,
    max_length,
    names,
)
from ingest_api.validation import (
    PAGEVIEW_FIELDS,
    ValidatedBody,
    check_types,
    fields_of,
    pageview_of,
    required_text,
    type_checks,
)
from shared.envelope import PropertyValue

EVENT_FIELDS = frozenset(names(EVENT_BODY))
MAX_NAME_CHARS = max_length(EVENT_BODY, "name")
# The event's own fields, checked after the pageview's (properties has a check of its own).
_EVENT_TYPE_CHECKS = type_checks(tuple(field for field in EVENT_BODY if field.name not in PAGEVIEW_FIELDS))
TOO_MANY_PROPERTIES = f"properties must have at most {MAX_PROPERTIES} keys"
PROPERTY_KEY_TOO_LONG = f"property keys must be at most {MAX_PROPERTY_KEY_CHARS} characters"
PROPERTY_VALUE_TOO_LONG = f"property values must be at most {MAX_PROPERTY_VALUE_CHARS} characters"
PROPERTY_NUMBER_RANGE = f"property numbers must be from {-MAX_PROPERTY_NUMBER!r} to {MAX_PROPERTY_NUMBER!r}"


def event_from(decoded: Any, now_ms: int) -> ValidatedBody:
    values = fields_of(decoded, EVENT_FIELDS)
    pageview = pageview_of(values, now_ms)
    check_types(values, _EVENT_TYPE_CHECKS)
    return dataclasses.replace(
        pageview,
        kind="event",
        event_id=values.get("event_id"),
        event_name=required_text(values.get("name"), "name", errors.MISSING_NAME, MAX_NAME_CHARS),
        event_properties=_properties(values.get("properties")),
    )


def _properties(value: Any) -> dict[str, PropertyValue]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(item, str | int | float) for item in value.values()):
        raise BadRequest(errors.BAD_PROPERTIES)  # bool is an int: flat values are exactly these
    if len(value) > MAX_PROPERTIES:
        raise BadRequest(TOO_MANY_PROPERTIES)
    for key, item in value.items():
        if len(key) > MAX_PROPERTY_KEY_CHARS:
            raise BadRequest(PROPERTY_KEY_TOO_LONG)
        if isinstance(item, str):
            if len(item) > MAX_PROPERTY_VALUE_CHARS:
                raise BadRequest(PROPERTY_VALUE_TOO_LONG)
        elif type(item) is float and not math.isfinite(item):
            raise BadRequest(PROPERTY_NUMBER_RANGE)
    return value
