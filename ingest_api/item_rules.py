"""What each ingest route accepts beyond the checks every route shares (ingest_api.intake):
the item's own checks, and the permission a token needs on the item's site to send it.

An item's check turns one decoded JSON item (a request body, or a batch item) into a
ValidatedBody, whose ``kind`` is the envelope kind the workers store it as, or raises
BadRequest naming the field; its fields are declared in ingest_api.fields, for the checks and
the OpenAPI document alike. A new route's items are one more ``ItemRules`` here, served by an
``Intake`` with the layout they come in (ingest_api.app).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest_api.ai_fetch import ai_fetch_from
from ingest_api.events import event_from
from ingest_api.validation import ValidatedBody, pageview_from
from shared.control.grants import Permission


@dataclass(frozen=True, slots=True)
class ItemRules:
    check: Callable[[Any, int], ValidatedBody]  # (decoded item, arrival in ms) -> validated, or BadRequest
    permission: Permission  # what the token's role on the item's site must include (else 403)


PAGEVIEW = ItemRules(pageview_from, Permission.SITE_MANAGE_DATA)
EVENT = ItemRules(event_from, Permission.SITE_MANAGE_DATA)
AI_FETCH = ItemRules(ai_fetch_from, Permission.SITE_MANAGE_DATA)  # HitKeep's permission for it too
