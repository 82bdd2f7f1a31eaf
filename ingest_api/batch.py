"""The layout of ``POST /api/ingest/server/pageviews``: up to 1000 pageviews in one request.

The body is a JSON array of pageview bodies, or NDJSON (one body per line; a final newline
ends the last line) with ``Content-Type: application/x-ndjson``. Whole-request checks come
first (token and its lane, size, form, item count); then each item gets the checks and
messages of a single request's body, its own site and grant (ingest_api.intake runs them all).
Valid items go to Redis in one hand-off with the rate limit and the queue-depth check: all of
them or none.

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

import functools
from typing import Any

import orjson

from ingest_api import errors
from ingest_api.answer import Answer, json_answer
from ingest_api.errors import ApiError, BadRequest, error_response
from ingest_api.idempotency_key import IdempotencyKey, idempotency_key
from ingest_api.intake import Decode, LayoutAnswer, Rejected
from ingest_api.request import IngestRequest
from ingest_api.validation import decode_json
from shared.control.tokens import ApiToken

MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 1 << 20
NDJSON = "application/x-ndjson"
TOO_LARGE = f"batch body must be at most {MAX_BATCH_BYTES} bytes"
TOO_MANY = f"batch must hold at most {MAX_BATCH_ITEMS} items"


class Batch:
    max_bytes = MAX_BATCH_BYTES
    too_large = TOO_LARGE

    def items(self, request: IngestRequest, body: bytes, decode: Decode = decode_json) -> list[Any]:
        return batch_items(body, is_ndjson=_is_ndjson(request), decode=decode)

    def answer(
        self, request: IngestRequest, token: ApiToken, body: bytes, total: int, rejected: Rejected, site_id: str
    ) -> LayoutAnswer:
        """``{"accepted", "rejected"}``; with an Idempotency-Key, stored when accepted."""
        accepted = total - len(rejected)
        listed = [{"index": index, "status": refusal.status, "message": refusal.message} for index, refusal in rejected]
        summary = orjson.dumps({"accepted": accepted, "rejected": listed})
        # A batch refused whole (400) leaves no stored answer: its retry is decided afresh.
        key = idempotency_key(request, token, body, is_ndjson=_is_ndjson(request)) if accepted else None
        if key is None:
            return _batch_answer(summary), None, None
        return _batch_answer(summary), key.stored(summary), functools.partial(_replayed, key)


def batch_items(body: bytes, *, is_ndjson: bool, decode: Decode) -> list[Any]:
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


def _batch_answer(summary: bytes) -> Answer:
    """202, or 400 when no item was accepted (a stored answer too)."""
    return json_answer(202 if orjson.loads(summary)["accepted"] else 400, summary)


def _replayed(key: IdempotencyKey, stored_answer: bytes) -> Answer:
    """The answer to a repeat of the key: the first request's answer if this is the same
    request, else 422."""
    first_answer = key.first_answer(stored_answer)
    if first_answer is None:
        return error_response(ApiError(422, errors.IDEMPOTENCY_KEY_REUSED))
    return _batch_answer(first_answer)


def _json_or_none(line: bytes, decode: Decode) -> Any:
    try:
        return decode(line)
    except BadRequest:
        return None


def _is_ndjson(request: IngestRequest) -> bool:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower() == NDJSON
