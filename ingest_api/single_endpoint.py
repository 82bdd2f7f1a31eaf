"""``POST /api/ingest/server/pageview`` and ``/event``: check one body and hand it to Redis.

Checks run in HitKeep's order (docs/contract.md): token (and its lane), body, url, timestamp,
visitor_ip, user_agent (then, for an event, name and properties), site, grant, dnt. Every
refusal is charged to the rate bucket first (ingest_api.intake). A page_id the client sent
again within the idempotency window is answered 202 and not queued twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest_api.answer import Answer
from ingest_api.errors import ApiError
from ingest_api.intake import Intake, queued
from ingest_api.request import IngestRequest
from ingest_api.validation import MAX_BODY_BYTES, ValidatedBody

Parse = Callable[[bytes, int], ValidatedBody]
_EMPTY = (b"content-length", b"0")


class SingleEndpoint:
    """One pageview (``parse_pageview``) or one event (``parse_event``) per request."""

    def __init__(self, intake: Intake, parse: Parse) -> None:
        self._intake = intake
        self._parse = parse

    async def __call__(self, request: IngestRequest) -> Answer:
        """The answer; raises Unavailable when Redis does not answer (ingest_api.front: 503)."""
        received_ms = time.time_ns() // 1_000_000
        token, subject = await self._intake.caller(request)
        if throttled := self._intake.throttled(subject):
            return throttled
        try:
            token, lane = self._intake.token_and_lane(request, token)
            validated = self._parse(await request.body(MAX_BODY_BYTES), received_ms)
            site = await self._intake.site(token, validated)
        except ApiError as refusal:
            return await self._intake.refuse(subject, refusal)
        # dnt: charged like any request, nothing queued.
        handed_off = () if validated.dnt else (queued(validated, site, received_ms),)
        verdict = await self._intake.admit(subject, handed_off, lane=lane, token_id=token.id)
        return self._intake.answer(subject, verdict, Answer(202, [_EMPTY], site_id=site.id))
