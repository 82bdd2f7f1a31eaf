"""What an ingest endpoint answers: status, raw headers and body, sent as two ASGI messages.

The ingest routes are plain ASGI (ingest_api.front): building a Starlette ``Response`` and its
``MutableHeaders`` cost more than the rest of the 202 path, so answers are prebuilt header lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import Send

RawHeaders = list[tuple[bytes, bytes]]

JSON_MEDIA_TYPE = "application/json"
JSON = (b"content-type", JSON_MEDIA_TYPE.encode())


@dataclass(slots=True)
class Answer:
    status: int
    headers: RawHeaders
    body: bytes = b""
    site_id: str = "-"  # for the request log line, once the site is known

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def json_answer(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Answer:
    raw = [JSON, (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return Answer(status, raw, body)
