"""One request body validated the way the intake validates it, for the tests of the checks.

The product has no "validate a body" function: the intake (ingest_api.intake) gets the body's
item from its layout (ingest_api.one_item: ``json_value`` with ``decode_json``, which checks
the size and decodes), runs the route's item check on it (ingest_api.item_rules:
``pageview_from``, ``event_from``, ``ai_fetch_from``) and, when the check raises
KeyOrderNeeded, has the layout decode the body again in document order (``decode_in_order``)
and runs the check once more. ``validated`` composes those same production functions in that
same order, so the tests that call it test what the endpoints do, without a server.
(The intake's read of the body stops at the same MAX_BODY_BYTES with the same message.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Message

from ingest_api.one_item import OneItem
from ingest_api.request import IngestRequest
from ingest_api.validation import KeyOrderNeeded, ValidatedBody, decode_in_order, pageview_from

Check = Callable[[Any, int], ValidatedBody]  # an item check: ItemRules.check (ingest_api.item_rules)


async def _no_body() -> Message:
    raise AssertionError("the body is passed to the layout, never read from the request")


_LAYOUT = OneItem()
# OneItem reads nothing of the request; a real one stands in all the same.
_REQUEST = IngestRequest({"type": "http", "headers": [], "path": "/api/ingest/server/pageview"}, _no_body)


def validated(body: bytes, now_ms: int, check: Check = pageview_from) -> ValidatedBody:
    """``check`` of the one item of ``body``, received at ``now_ms``, as the intake runs it;
    raises BadRequest with the first failure's message."""
    (item,) = _LAYOUT.items(_REQUEST, body)
    try:
        return check(item, now_ms)
    except KeyOrderNeeded:
        (item,) = _LAYOUT.items(_REQUEST, body, decode_in_order)
        return check(item, now_ms)
