"""What the ingest endpoints read from an ASGI request: its path, a few headers, the peer and
the body.

Only the headers the endpoints use are decoded, in one pass over ``scope["headers"]``; when a
header is repeated, the first one counts (as with Starlette's ``Headers.get``).
"""

from __future__ import annotations

from starlette.types import Receive, Scope

from ingest_api import errors
from ingest_api.errors import BadRequest

_READ = {
    name.encode(): name
    for name in (
        "authorization",
        "x-api-key",
        "x-forwarded-for",
        "content-length",
        "content-type",
        "idempotency-key",
        "x-hitstream-lane",
    )
}


class IngestRequest:
    __slots__ = ("_receive", "headers", "path", "peer")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = _READ.get(raw_name)
            if name is not None and name not in headers:
                headers[name] = raw_value.decode("latin-1")
        self.headers = headers
        self.path: str = scope["path"]
        client = scope.get("client")
        self.peer: str | None = client[0] if client else None
        self._receive = receive

    async def body(self, limit: int, too_large: str = errors.BAD_BODY) -> bytes:
        """The body, read no further than one byte past ``limit``; BadRequest(``too_large``)
        beyond it."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(too_large)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] != "http.request":  # http.disconnect: nobody is left to answer
                raise BadRequest()
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BadRequest(too_large)
            if not message.get("more_body", False):
                return b"".join(chunks)
