"""A pageview's or an event's body fields, built on the application's thread.

Only what must be fixed at call time happens here: the id (so a retry carries the same one
and is stored once) and the time. Encoding waits for the sender.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

PropertyValue = str | int | float | bool


def pageview_fields(
    url: str,
    visitor_ip: str,
    user_agent: str,
    *,
    timestamp: datetime | str | None,
    page_id: str | None,
    optional: dict[str, Any],
) -> dict[str, Any]:
    """The body of a pageview: ``optional`` holds the optional fields as given (None = absent);
    a missing page_id is a new uuid4, a missing time is now."""
    fields = {
        "url": url,
        "timestamp": datetime.now(UTC) if timestamp is None else timestamp,
        "visitor_ip": visitor_ip,
        "user_agent": user_agent,
        "page_id": page_id or str(uuid.uuid4()),
    }
    for name, value in optional.items():
        if value is not None:
            fields[name] = value
    return fields


def event_fields(
    name: str, pageview: dict[str, Any], properties: dict[str, PropertyValue] | None, event_id: str | None
) -> dict[str, Any]:
    """An event's body: a pageview's fields plus its name, properties and a uuid4 event_id."""
    pageview["name"] = name
    pageview["event_id"] = event_id or str(uuid.uuid4())
    if properties:
        pageview["properties"] = properties
    return pageview
