"""Connection limits of one API process: a cap on open connections, and time limits for a
request's head and for its body, so that idle, slow or stalled clients cannot starve others.

What uvicorn 0.54 offers, and what is used:
- ``timeout_keep_alive`` (used, uvicorn's default 5 s): closes a keep-alive connection that
  sends no byte of its next request.
- ``limit_concurrency`` (not used): it counts idle connections too, and answers its 503 only
  once a request head has arrived, so connections that never send a byte are never refused
  while they fill the process's file descriptors, and every normal client gets 503.
- Nothing limits how long a fresh connection may stay silent, how long a request head may
  dribble in, or how long a promised body may stall: uvicorn waits for ever.

So ``GuardedHttpTools`` extends uvicorn's httptools protocol in the hooks where a connection
changes state (made, lost, head complete, body complete, response complete):
- A request head (from the connection's start, or from the end of the previous answer) must
  be whole within ``HITSTREAM_HEADER_TIMEOUT``, else the connection is closed.
- Its body must be whole within ``HITSTREAM_BODY_TIMEOUT`` of the head, else the request is
  answered 408 (unless it was answered already) and the connection closed.
- Past ``HITSTREAM_MAX_CONNECTIONS`` open connections, a new connection closes the connection
  that has waited longest for a request head (silent, dribbling or idle keep-alive: none of
  them has a request to lose); when every connection carries a request, the new one is
  answered 503 with Retry-After and closed at once. Nothing queues.

Per request this only moves the connection between two ordered dicts (no timer per request
or connection, no clock reading: deadlines come from the sweep's clock). One sweep per second
per process closes what is late, so a limit fires between its value and two seconds after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingest_api import errors
from shared.config import load_settings

SWEEP_SECONDS = 1.0
OVER_CAPACITY_RETRY_AFTER_SECONDS = 1


def _raw_answer(status: str, message: str, *headers: bytes) -> bytes:
    body = b'{"message":"%s"}' % message.encode()
    head = [
        b"HTTP/1.1 " + status.encode(),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        *headers,
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# Written straight to the transport: the app never sees these connections or requests.
OVER_CAPACITY = _raw_answer(
    "503 Service Unavailable",
    errors.SERVICE_NOT_AVAILABLE,
    b"retry-after: %d" % OVER_CAPACITY_RETRY_AFTER_SECONDS,
)
REQUEST_TIMEOUT = _raw_answer("408 Request Timeout", errors.REQUEST_TIMEOUT)


class Guard:
    """One process's limits and its connections waiting for a head or a body, by deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = load_settings()
        self.max_connections = settings.max_connections
        self.header_timeout = settings.header_timeout_seconds
        self.body_timeout = settings.body_timeout_seconds
        # Insertion order is deadline order (one timeout per dict), so a sweep stops at the
        # first connection that is not late.
        self.heads: dict[GuardedHttpTools, float] = {}
        self.bodies: dict[GuardedHttpTools, float] = {}
        self.closing = 0  # closed here, not yet lost: no longer counted as open
        self._loop = loop
        self._sweep()

    def _sweep(self) -> None:
        now = self._loop.time()
        for waiting in (self.heads, self.bodies):
            while waiting:
                connection, deadline = next(iter(waiting.items()))
                if deadline > now:
                    break
                connection.close_late()
        # The deadlines of what starts waiting before the next sweep: one period later than
        # exact, so a limit is never shorter than its value.
        self.head_deadline = now + SWEEP_SECONDS + self.header_timeout
        self.body_deadline = now + SWEEP_SECONDS + self.body_timeout
        self._loop.call_later(SWEEP_SECONDS, self._sweep)


_guards: dict[asyncio.AbstractEventLoop, Guard] = {}  # one per server loop (one per process)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and head and body time limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        guard = _guards.get(self.loop)
        if guard is None:
            guard = _guards[self.loop] = Guard(self.loop)
        self._guard = guard
        self._closed_here = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self._guard
        if len(self.connections) - guard.closing > guard.max_connections:
            waited_longest = next(iter(guard.heads), None)
            if waited_longest is None:  # every other connection carries a request
                self._close(OVER_CAPACITY)
                return
            waited_longest._close()
        guard.heads[self] = guard.head_deadline

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self._guard
        guard.heads.pop(self, None)
        guard.bodies.pop(self, None)
        if self._closed_here:
            guard.closing -= 1
        super().connection_lost(exc)

    # The per-request hooks call the base class directly (not super()) and skip checks that
    # connection_lost makes unneeded (it removes a closed connection from both dicts): they
    # run on every request.
    def on_headers_complete(self) -> None:
        guard = self._guard
        guard.heads.pop(self, None)
        guard.bodies[self] = guard.body_deadline
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        guard = self._guard
        guard.bodies.pop(self, None)
        HttpToolsProtocol.on_message_complete(self)
        if self.cycle.response_complete:  # answered before its body was whole (e.g. 429)
            guard.heads[self] = guard.head_deadline

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if not self.cycle.more_body:  # else the body's deadline still runs; then the next head's
            self._guard.heads[self] = self._guard.head_deadline

    def close_late(self) -> None:
        """Past a deadline: a request not yet answered gets 408; the connection is closed."""
        cycle = self.cycle
        if self in self._guard.bodies and not cycle.response_started:
            # The app may still be awaiting the body or answering: it now sees a disconnect
            # and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            self._close(REQUEST_TIMEOUT)
        else:
            self._close()

    def _close(self, answer: bytes = b"") -> None:
        guard = self._guard
        guard.heads.pop(self, None)
        guard.bodies.pop(self, None)
        if self._closed_here or self.transport.is_closing():
            return
        self._closed_here = True
        guard.closing += 1
        if answer:
            self.transport.write(answer)
        self.transport.close()
