"""``POST /api/ingest/server/pageviews``: up to 1000 pageviews in one request.

The body is a JSON array of pageview bodies, or NDJSON (one body per line; a final newline
ends the last line) with ``Content-Type: application/x-ndjson``. Whole-request checks come
first (token and its lane, size, form, item count); then each item gets the single endpoint's checks and
messages, its own site and grant. Valid items go to Redis in one hand-off with the rate
limit and the queue-depth check: all of them or none.

Answer: ``{"accepted": N, "rejected": [{"index": i, "status": s, "message": "..."}]}`` with
202, or 400 when no item was accepted. ``accepted`` counts dnt items (answered, not queued)
and retried page_ids (answered, queued once). The rate bucket is charged one item per item,
valid or not (like refused single requests); a batch larger than the burst needs a full
bucket and leaves it in debt (ingest_api/handoff.lua). With ``Idempotency-Key`` the accepted
answer is kept for the idempotency window: a repeat of the same request gets it back, a request
with another body gets 422 (ingest_api.idempotency_key); both are charged like any request and
queue nothing. A batch refused whole leaves no answer and no seen key in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from ingest_api import errors
from ingest_api.answer import Answer, json_answer
from ingest_api.errors import ApiError, BadRequest, error_response
from ingest_api.handoff import Queued
from ingest_api.idempotency_key import IdempotencyKey, idempotency_key
from ingest_api.intake import Intake, queued
from ingest_api.request import IngestRequest
from ingest_api.validation import KeyOrderNeeded, decode_in_order, decode_json, pageview_from

MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 1 << 20
NDJSON = "application/x-ndjson"
TOO_LARGE = f"batch body must be at most {MAX_BATCH_BYTES} bytes"
TOO_MANY = f"batch must hold at most {MAX_BATCH_ITEMS} items"


class BatchEndpoint:
    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    async def __call__(self, request: IngestRequest) -> Answer:
        """The answer; raises Unavailable when Redis does not answer (ingest_api.front: 503)."""
        received_ms = time.time_ns() // 1_000_000
        token, subject = await self._intake.caller(request)
        if throttled := self._intake.throttled(subject):
            return throttled
        try:
            token, lane = self._intake.token_and_lane(request, token)
            body = await request.body(MAX_BATCH_BYTES, TOO_LARGE)
            is_ndjson = _media_type(request) == NDJSON
            items = batch_items(body, is_ndjson=is_ndjson)
        except ApiError as refusal:
            return await self._intake.refuse(subject, refusal)
        if throttled := self._intake.throttled(subject, len(items)):  # before checking the items
            return throttled
        handed_off: list[Queued] = []
        rejected: list[dict[str, Any]] = []
        in_document_order: list[Any] | None = None  # decoded again only when an item needs it
        for index, item in enumerate(items):
            try:
                try:
                    validated = pageview_from(item, received_ms)
                except KeyOrderNeeded:
                    if in_document_order is None:
                        in_document_order = batch_items(body, is_ndjson=is_ndjson, decode=decode_in_order)
                    validated = pageview_from(in_document_order[index], received_ms)
                site = await self._intake.site(token, validated)
            except ApiError as refusal:
                rejected.append(
                    {
                        "index": index,
                        "status": refusal.status,
                        "message": refusal.message,
                    }
                )
                continue
            if not validated.dnt:
                handed_off.append(queued(validated, site, received_ms))
        accepted = len(items) - len(rejected)
        answer = orjson.dumps({"accepted": accepted, "rejected": rejected})
        # A batch refused whole (400) leaves no stored answer: its retry is decided afresh.
        key = idempotency_key(request, token, body, is_ndjson=is_ndjson) if accepted else None
        stored = key.stored(answer) if key else None
        verdict = await self._intake.admit(
            subject, handed_off, cost=len(items), answer=stored, lane=lane, token_id=token.id
        )
        return self._intake.answer(subject, verdict, _answer(answer, key, verdict.stored_answer))


def batch_items(body: bytes, *, is_ndjson: bool, decode: Callable[[bytes], Any] = decode_json) -> list[Any]:
    """The decoded items; an NDJSON line that is not JSON becomes None (its item's 400)."""
    if is_ndjson:
        lines = body.split(b"\n")
        if lines[-1].strip() == b"":
            lines.pop()
        items = [_json_or_none(line, decode) for line in lines]
    else:
        try:
            items = decode(body)
        except BadRequest:
            raise BadRequest(errors.BAD_BATCH) from None
        if not isinstance(items, list):
            raise BadRequest(errors.BAD_BATCH)
    if not items:
        raise BadRequest(errors.EMPTY_BATCH)
    if len(items) > MAX_BATCH_ITEMS:
        raise BadRequest(TOO_MANY)
    return items


def batch_response(answer: bytes) -> Answer:
    return json_answer(202 if orjson.loads(answer)["accepted"] else 400, answer)


def _answer(answer: bytes, key: IdempotencyKey | None, stored_answer: bytes) -> Answer:
    """This request's answer; when its key was used before, the first request's answer if
    this is the same request, else 422."""
    if key is None or not stored_answer:
        return batch_response(answer)
    first_answer = key.first_answer(stored_answer)
    if first_answer is None:
        return error_response(ApiError(422, errors.IDEMPOTENCY_KEY_REUSED))
    return batch_response(first_answer)


def _json_or_none(line: bytes, decode: Callable[[bytes], Any]) -> Any:
    try:
        return decode(line)
    except BadRequest:
        return None


def _media_type(request: IngestRequest) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()
