"""The application's outermost layer: refuses oversized headers, serves the ingest routes
directly, hands every other request to Starlette, and counts and logs every answer (route,
status, site id, latency).

The ingest routes (POST only; another method gets 405) skip Starlette's middleware, routing
and Request/Response objects: on the 202 path those cost about as much as everything else the
request does. Serving them as plain ASGI endpoints in Starlette's router instead (commit
68fb68d, ``Route(path, asgi_app, methods=["POST"])``) cost more than the 5% that would have
bought the simpler design: in process, 4.3 µs of CPU per request for Starlette's router and
its two middlewares against 0.6 µs for this dict lookup (3 rounds, same run), next to a
request's ~55 µs; end to end (bench/api_bench.py --baseline-tree, 4 rounds of 5 s on a busy
2-core machine) 1.17x the server CPU per request and 0.81x the requests/s of this front.
A route whose path names a site (``/api/sites/{site_id}/ingest/ai-fetch``) is a template: a
path matches it when it has one non-empty segment where ``{site_id}`` stands, and it is
counted and logged under the template, never the id. Every other route goes through
Starlette as usual, whose own answers (unknown
path 404, wrong method 405, a failing route 500) ``ERROR_HANDLERS`` turn into the JSON
``{"message"}`` every error answer carries.

Logs never hold the token, the body or any IP address: a log line is safe to ship anywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from ingest_api import errors
from ingest_api.answer import JSON_MEDIA_TYPE, Answer
from ingest_api.errors import ApiError, error_body, error_response, service_unavailable
from ingest_api.handoff import Unavailable
from ingest_api.metrics import Metrics
from ingest_api.request import IngestRequest

log = logging.getLogger("hitstream.api")

# Request headers (names + values, all of them) above this answer 431: uvicorn sets no limit.
MAX_HEADER_BYTES = 16 * 1024

# Answers that never change (sent as they are, never modified).
_HEADERS_TOO_LARGE = error_response(ApiError(431, errors.HEADERS_TOO_LARGE))
_SERVICE_UNAVAILABLE = service_unavailable()
_METHOD_NOT_ALLOWED = error_response(ApiError(405, errors.METHOD_NOT_ALLOWED, {"Allow": "POST"}))
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


def _header_bytes(headers: list[tuple[bytes, bytes]]) -> int:
    # A plain loop: 0.22 us for a request's four headers against 0.48 us for
    # sum(map(len, chain.from_iterable(headers))) (timeit, same run).
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
    return size


SITE_SEGMENT = "{site_id}"


class Front:
    def __init__(self, app: ASGIApp, ingest: Mapping[str, Endpoint], routes: frozenset[str], metrics: Metrics) -> None:
        self._app = app
        self._ingest = {path: endpoint for path, endpoint in ingest.items() if SITE_SEGMENT not in path}
        # (prefix, suffix, template, endpoint) of each route with a site segment
        self._templates = [
            (path.partition(SITE_SEGMENT)[0], path.partition(SITE_SEGMENT)[2], path, endpoint)
            for path, endpoint in ingest.items()
            if SITE_SEGMENT in path
        ]
        self._routes = routes | frozenset(ingest)
        self._metrics = metrics

    def _route(self, path: str) -> tuple[str, Endpoint | None]:
        """The route a path is counted under and its ingest endpoint (None: not an ingest route)."""
        endpoint = self._ingest.get(path)
        if endpoint is not None:
            return path, endpoint
        for prefix, suffix, template, templated in self._templates:
            if path.startswith(prefix) and path.endswith(suffix):
                segment = path[len(prefix) : len(path) - len(suffix)]
                if segment and "/" not in segment:
                    return template, templated
        return path, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        path, endpoint = self._route(scope["path"])
        status, site_id = 500, "-"  # what the client sees if the app fails before answering
        try:
            if _header_bytes(scope["headers"]) > MAX_HEADER_BYTES:
                answer = _HEADERS_TOO_LARGE
            elif endpoint is not None and scope["method"] == "POST":
                try:
                    answer = await endpoint(IngestRequest(scope, receive))
                except Unavailable as reason:  # Redis did not answer in time: nothing was promised
                    log.info("%s answered 503: %s", path, reason)
                    answer = _SERVICE_UNAVAILABLE
                except Exception:
                    log.exception("%s failed", path)
                    answer = _INTERNAL_ERROR
            elif endpoint is not None:
                answer = _METHOD_NOT_ALLOWED
            else:
                status = await self._starlette(scope, receive, send)
                return
            status, site_id = answer.status, answer.site_id
            await answer.send(send)
        finally:
            route = path if path in self._routes else "other"
            self._metrics.count_request(route, status)
            # Accepted requests are the bulk: one line each only when debugging (metrics count them).
            level = logging.DEBUG if status < 400 else logging.INFO
            if log.isEnabledFor(level):
                elapsed_ms = (time.perf_counter() - started) * 1000
                log.log(level, "%s %s %d site=%s %.1fms", scope["method"], route, status, site_id, elapsed_ms)

    async def _starlette(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Starlette's answer; returns its status."""
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self._app(scope, receive, send_and_note)
        return status
