"""The application's outermost layer: refuses oversized headers, serves the ingest routes
directly, hands every other request to Starlette, and counts and logs every answer (route,
status, site id, latency).

The ingest routes (POST only; another method gets 405) skip Starlette's middleware, routing
and Request/Response objects: on the 202 path those cost about as much as everything else the
request does. Every other route goes through Starlette as usual, whose own answers (unknown
path 404, wrong method 405, a failing route 500) ``ERROR_HANDLERS`` turn into the JSON
``{"message"}`` every error answer carries.

Logs never hold the token, the body or any IP address: a log line is safe to ship anywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from ingest_api import errors
from ingest_api.answer import JSON_MEDIA_TYPE, Answer
from ingest_api.errors import ApiError, error_body, error_response
from ingest_api.handoff import Unavailable
from ingest_api.metrics import Metrics
from ingest_api.request import IngestRequest

log = logging.getLogger("hitstream.api")

# Request headers (names + values, all of them) above this answer 431: uvicorn sets no limit.
MAX_HEADER_BYTES = 16 * 1024
UNAVAILABLE_RETRY_AFTER_SECONDS = 1

# Answers that never change (sent as they are, never modified).
_HEADERS_TOO_LARGE = error_response(ApiError(431, errors.HEADERS_TOO_LARGE))
_SERVICE_UNAVAILABLE = error_response(
    ApiError(503, errors.SERVICE_NOT_AVAILABLE, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
)
_INTERNAL_ERROR = error_response(ApiError(500, errors.INTERNAL_ERROR))


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's HTTPException (404 unknown path, 405 wrong method) as JSON."""
    assert isinstance(error, HTTPException)
    return Response(error_body(error.detail), error.status_code, error.headers, JSON_MEDIA_TYPE)


async def _server_error(request: Request, error: Exception) -> Response:
    """A failing Starlette route as JSON (Starlette then re-raises the error for uvicorn to log)."""
    return Response(error_body(errors.INTERNAL_ERROR), 500, media_type=JSON_MEDIA_TYPE)


# Starlette(exception_handlers=ERROR_HANDLERS): Exception is Starlette's key for its 500 handler.
ERROR_HANDLERS: dict[Any, ExceptionHandler] = {HTTPException: _http_error, Exception: _server_error}

Endpoint = Callable[[IngestRequest], Awaitable[Answer]]


class IngestRoute:
    """One ingest endpoint as a plain ASGI app, for ``Route(path, IngestRoute(...), methods=["POST"])``
    in Starlette's router: the endpoint reads the request and answers without Starlette's
    Request and Response objects. Redis away answers 503, a failure 500; the site id goes to the
    request log line through ``scope["state"]``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self._endpoint(IngestRequest(scope, receive))
        except Unavailable as reason:  # Redis did not answer in time: nothing was promised
            log.info("%s answered 503: %s", scope["path"], reason)
            answer = _SERVICE_UNAVAILABLE
        except Exception:
            log.exception("%s failed", scope["path"])
            answer = _INTERNAL_ERROR
        scope["state"]["site_id"] = answer.site_id
        await answer.send(send)


class Front:
    """Refuses oversized headers, then lets the app answer; counts and logs every answer."""

    def __init__(self, app: ASGIApp, routes: frozenset[str], metrics: Metrics) -> None:
        self._app = app
        self._routes = routes
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = 500  # what the client sees if the app fails before answering
        state = scope["state"] = {}

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if sum(map(len, chain.from_iterable(scope["headers"]))) > MAX_HEADER_BYTES:
                status = _HEADERS_TOO_LARGE.status
                await _HEADERS_TOO_LARGE.send(send)
            else:
                await self._app(scope, receive, send_and_note)
        finally:
            route = path if path in self._routes else "other"
            self._metrics.count_request(route, status)
            # Accepted requests are the bulk: one line each only when debugging (metrics count them).
            level = logging.DEBUG if status < 400 else logging.INFO
            if log.isEnabledFor(level):
                elapsed_ms = (time.perf_counter() - started) * 1000
                site_id = state.get("site_id", "-")
                log.log(level, "%s %s %d site=%s %.1fms", scope["method"], route, status, site_id, elapsed_ms)
