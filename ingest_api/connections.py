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

So ``GuardedHttpTools`` extends uvicorn's httptools protocol where a connection is made
and lost, and one sweep per second per process looks at every open connection's state in
uvicorn's own request cycle (no cycle yet, or the last one answered: waiting for a head; a
body still to come: waiting for a body; else the application is answering: no limit):
- A request head (from the connection's start, or from the end of the previous answer) must
  be whole within ``HITSTREAM_HEADER_TIMEOUT``, else the connection is closed.
- Its body must be whole within ``HITSTREAM_BODY_TIMEOUT`` of the head, else the request is
  answered 408 (unless it was answered already) and the connection closed.
- Past ``HITSTREAM_MAX_CONNECTIONS`` open connections, a new connection closes the connection
  that has waited longest for a request head (silent, dribbling or idle keep-alive: none of
  them has a request to lose); when every connection carries a request, the new one is
  answered 503 with Retry-After and closed at once. Nothing queues.

A wait is timed from the first sweep that sees it, so a limit fires between its value and
two seconds after it. Nothing runs per request: the first version of this guard hooked a
request's head, body and answer, and cost 1.05 and 0.95 us of CPU per request over uvicorn's
own ~14 us, against 0.36 and 0.22 us for this one (bench/guard_bench.py, two runs in each
checkout, alternately); that is about 2% of an ingest request end to end. A sweep costs
about 1.6 us per open connection: 1.6 ms per second at the default cap of 1,000 (32 ms for
20,000, measured with protocol objects on fake transports).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
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


class Wait(enum.Enum):
    HEAD = enum.auto()
    BODY = enum.auto()


class Guard:
    """One process's limits, its sweep, and its connections waiting for a head, by how long."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        settings = load_settings()
        self.max_connections = settings.max_connections
        self.limits = {Wait.HEAD: settings.header_timeout_seconds, Wait.BODY: settings.body_timeout_seconds}
        self.connections = connections  # uvicorn's: every open connection of this process
        # Who to close first past the cap: the head waiters the last sweep saw, longest wait
        # first, then the connections made since. Entries may be stale: checked when taken.
        self.head_waiters: deque[GuardedHttpTools] = deque()
        self.closing = 0  # closed here, not yet lost: no longer counted as open
        self._loop = loop
        self._sweep()

    def _sweep(self) -> None:
        now = self._loop.time()
        waiting_for_head = []
        for connection in list(self.connections):
            wait = connection.look(now)
            if wait is Wait.HEAD:
                waiting_for_head.append(connection)
        waiting_for_head.sort(key=GuardedHttpTools.waiting_since)
        self.head_waiters = deque(waiting_for_head)
        self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def make_room(self) -> bool:
        """Close the open connection that has waited longest for a request head; False when
        every connection carries a request."""
        while self.head_waiters:
            connection = self.head_waiters.popleft()
            if connection.wait() is Wait.HEAD and connection.is_open():
                connection.close()
                return True
        return False


_guards: dict[asyncio.AbstractEventLoop, Guard] = {}  # one per server loop (one per process)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and head and body time limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        guard = _guards.get(self.loop)
        if guard is None:
            guard = _guards[self.loop] = Guard(self.loop, self.connections)
        self._guard = guard
        self.closed_here = False
        # What the last sweep saw this connection wait for, on which request cycle, since when.
        self._waited: tuple[Wait | None, object] = (Wait.HEAD, None)
        self._since = self.loop.time()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self._guard
        if len(self.connections) - guard.closing > guard.max_connections and not guard.make_room():
            self.close(OVER_CAPACITY)
            return
        guard.head_waiters.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed_here:
            self._guard.closing -= 1
        super().connection_lost(exc)

    def is_open(self) -> bool:
        """Not lost, and not closing: a candidate to make room."""
        return self in self.connections and not self.closed_here and not self.transport.is_closing()

    def wait(self) -> Wait | None:
        """What the connection waits for from its client now (None: the app is answering)."""
        cycle = self.cycle
        if cycle is None:
            return Wait.HEAD
        if cycle.more_body:  # answered already (e.g. 429) or not: its body must still arrive
            return Wait.BODY
        return Wait.HEAD if cycle.response_complete else None

    def waiting_since(self) -> float:
        return self._since

    def look(self, now: float) -> Wait | None:
        """The sweep's look: note a new wait, or close a connection whose wait is over its limit."""
        wait = self.wait()
        waited = (wait, self.cycle)  # a new request cycle is a new wait, even of the same kind
        if waited != self._waited:
            self._waited, self._since = waited, now
        elif wait is not None and now - self._since >= self._guard.limits[wait]:
            self.close_late(wait)
        return wait

    def close_late(self, wait: Wait) -> None:
        """Past a limit: a request not yet answered gets 408; the connection is closed."""
        cycle = self.cycle
        if wait is Wait.BODY and not cycle.response_started:
            # The app may still be awaiting the body or answering: it now sees a disconnect
            # and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            self.close(REQUEST_TIMEOUT)
        else:
            self.close()

    def close(self, answer: bytes = b"") -> None:
        if self.closed_here or self.transport.is_closing():
            return
        self.closed_here = True
        self._guard.closing += 1
        if answer:
            self.transport.write(answer)
        self.transport.close()
