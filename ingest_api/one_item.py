"""The layout of ``POST /api/ingest/server/pageview`` and ``/event``: one item per request,
whose body is the item (a JSON object of at most 65536 bytes).

The item's refusal is the request's answer (``{"message"}``); an accepted one is answered 202
with an empty body (ingest_api.intake runs the checks).
"""

from __future__ import annotations

from typing import Any

from ingest_api import errors
from ingest_api.answer import Answer
from ingest_api.errors import error_response
from ingest_api.intake import Decode, LayoutAnswer, Rejected
from ingest_api.request import IngestRequest
from ingest_api.validation import MAX_BODY_BYTES, decode_json, json_value
from shared.control.tokens import ApiToken

_EMPTY = (b"content-length", b"0")


class OneItem:
    max_bytes = MAX_BODY_BYTES
    too_large = errors.BAD_BODY

    def items(self, request: IngestRequest, body: bytes, decode: Decode = decode_json) -> list[Any]:
        return [json_value(body, decode)]

    def answer(
        self, request: IngestRequest, token: ApiToken, body: bytes, total: int, rejected: Rejected, site_id: str
    ) -> LayoutAnswer:
        if rejected:
            return error_response(rejected[0][1]), None, None
        return Answer(202, [_EMPTY], site_id=site_id), None, None
