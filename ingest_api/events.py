"""``POST /api/ingest/server/event`` bodies: a pageview body plus a ``name`` and ``properties``.

The pageview's checks run first, in their order (ingest_api.validation), then the name, then
the properties; the first failure decides and its message names the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ingest_api import errors
from ingest_api.errors import BadRequest
from ingest_api.validation import Pageview, json_value, pageview_from
from shared.envelope import PropertyValue

MAX_NAME_CHARS = 200
MAX_PROPERTIES = 50
MAX_PROPERTY_KEY_CHARS = 128
MAX_PROPERTY_VALUE_CHARS = 1024


def parse_event(body: bytes, now_ms: int) -> Pageview:
    """Validate one event body; raise BadRequest with the first failure's message."""
    return event_from(json_value(body), now_ms)


def event_from(decoded: Any, now_ms: int) -> Pageview:
    pageview = pageview_from(decoded, now_ms)
    return dataclasses.replace(
        pageview,
        event_name=_name(decoded.get("name")),
        event_properties=_properties(decoded.get("properties")),
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
    if not isinstance(value, dict) or not all(
        isinstance(item, str | int | float) for item in value.values()
    ):
        raise BadRequest(
            errors.BAD_PROPERTIES
        )  # bool is an int: flat values are exactly these
    if len(value) > MAX_PROPERTIES:
        raise BadRequest(f"properties must have at most {MAX_PROPERTIES} keys")
    for key, item in value.items():
        if len(key) > MAX_PROPERTY_KEY_CHARS:
            raise BadRequest(
                f"property keys must be at most {MAX_PROPERTY_KEY_CHARS} characters"
            )
        if isinstance(item, str) and len(item) > MAX_PROPERTY_VALUE_CHARS:
            raise BadRequest(
                f"property values must be at most {MAX_PROPERTY_VALUE_CHARS} characters"
            )
    return value
