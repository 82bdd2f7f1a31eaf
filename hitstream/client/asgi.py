"""ASGI middleware (Starlette, FastAPI, any ASGI app): a pageview per served HTML page.

    app.add_middleware(HitstreamMiddleware, client=AsyncClient(URL, TOKEN), skip_paths=["/static"])

The pageview is sent once the response's head has gone out (status and content type known,
nothing added to the response's latency but a queue put). On lifespan startup an
``AsyncClient`` is started in the server's loop; on lifespan shutdown the client delivers
what is queued (``aclose``; a threaded ``Client`` is closed off the loop) before the server
is told shutdown is complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hitstream.client.clients import AsyncClient
from hitstream.client.pages import RecordingMiddleware, RequestView

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The request headers pages.PageRecorder reads.
_READ_HEADERS = frozenset(
    (
        b"host",
        b"user-agent",
        b"referer",
        b"accept-language",
        b"dnt",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    )
)


class HitstreamMiddleware(RecordingMiddleware[ASGIApp]):
    """``HitstreamMiddleware(app, client, trusted_proxies=..., skip_paths=..., base_url=...)``
    (options: pages.PageRecorder)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http" or self.recorder.skipped(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_and_record(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                content_type = next(
                    (value for name, value in message.get("headers", ()) if name == b"content-type"), b""
                )
                self.recorder.record(lambda: request_view(scope), message["status"], content_type.decode("latin-1"))

        await self.app(scope, receive, send_and_record)

    def _lifespan_send(self, send: Send) -> Send:
        client = self.recorder.client

        async def send_with_client(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and isinstance(client, AsyncClient):
                client.start()
            elif message["type"] == "lifespan.shutdown.complete":
                if isinstance(client, AsyncClient):
                    await client.aclose()
                else:
                    await asyncio.to_thread(client.close)
            await send(message)

        return send_with_client


def request_view(scope: Scope) -> RequestView:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _READ_HEADERS:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text  # repeated: one list
    client = scope.get("client")
    return RequestView(
        method=scope["method"],
        scheme=scope.get("scheme", "http"),
        path=scope["path"],
        raw_path=scope.get("raw_path") or scope["path"].encode(),
        query=scope.get("query_string", b""),
        peer=client[0] if client else None,
        headers=headers,
    )
