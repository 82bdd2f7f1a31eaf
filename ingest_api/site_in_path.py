"""A layout (ingest_api.one_item, ingest_api.batch) whose site is named in the request's path,
``/api/sites/{id}/...`` (the AI-fetch routes): every item goes to its check with that site id
(``SiteItem``); a path whose id is no UUID refuses the whole request, ``Invalid site_id``.
"""

from __future__ import annotations

from typing import Any

from ingest_api.ai_fetch import SiteItem, path_site_id
from ingest_api.intake import Decode, Layout, LayoutAnswer, Rejected
from ingest_api.request import IngestRequest
from ingest_api.validation import decode_json
from shared.control.tokens import ApiToken


class SiteInPath:
    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self.max_bytes = layout.max_bytes
        self.too_large = layout.too_large

    def items(self, request: IngestRequest, body: bytes, decode: Decode = decode_json) -> list[Any]:
        site_id = path_site_id(request.path)
        return [SiteItem(site_id, item) for item in self._layout.items(request, body, decode)]

    def answer(
        self, request: IngestRequest, token: ApiToken, body: bytes, total: int, rejected: Rejected, site_id: str
    ) -> LayoutAnswer:
        return self._layout.answer(request, token, body, total, rejected, site_id)
