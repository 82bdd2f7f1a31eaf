"""Counts and logs every answered request: route, status, site id and latency.

Never the token, the body or any IP address: a log line is safe to ship anywhere.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api.metrics import Metrics

log = logging.getLogger("hitstream.api")


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.count_request(route, status)
            # Accepted requests are the bulk: one line each only when debugging (metrics count them).
            level = logging.DEBUG if status < 400 else logging.INFO
            if log.isEnabledFor(level):
                site_id = scope.get("state", {}).get("site_id", "-")
                elapsed_ms = (time.perf_counter() - started) * 1000
                log.log(level, "%s %s %d site=%s %.1fms", scope["method"], route, status, site_id, elapsed_ms)
