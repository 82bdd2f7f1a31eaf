"""What an event envelope adds to a pageview's context: its name and flat properties.

The API has already trimmed the name and checked the properties are flat; these checks
guard the envelope (a hand-edited or requeued one) and raise ValueError naming the field,
which makes the envelope a poison record. Property values are stored as strings: booleans
as ``true``/``false``, numbers as their JSON text, strings unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from shared.envelope import PropertyValue


def event_name(name: str | None) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("event_name: an event needs a non-empty name")
    return name


def property_text(value: PropertyValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    raise ValueError(f"not a string, number or boolean: {type(value).__name__}")


def property_texts(properties: Mapping[str, PropertyValue]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for key, value in properties.items():
        try:
            texts[str(key)] = property_text(value)
        except ValueError as error:
            raise ValueError(f"event_properties[{key!r}]: {error}") from None
    return texts
