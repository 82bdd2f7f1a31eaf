"""A local HTTP server on a thread that serves given answers by path, well-formed or hostile
(no Content-Length, a byte at a time, silent after its head), for the commands that fetch
data files (``hitstream geoip update``, ``hitstream crawlers update``)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Unannounced:
    """A body sent without Content-Length: the connection's close marks its end."""

    body: bytes


@dataclass
class Cut:
    """Announces ``length`` bytes, sends ``body`` (fewer) and closes: a truncated download."""

    body: bytes
    length: int


@dataclass
class Trickle:
    """Announces ``length`` bytes, then sends one every ``interval`` seconds until the client
    hangs up (``hung_up`` is set then)."""

    length: int
    interval: float = 0.05
    hung_up: threading.Event = field(default_factory=threading.Event)


@dataclass
class Silent:
    """Announces ``length`` bytes, then sends nothing until the client hangs up."""

    length: int
    hung_up: threading.Event = field(default_factory=threading.Event)


Served = bytes | Unannounced | Cut | Trickle | Silent


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``served`` (path -> answer); 404 for anything else. HTTP/1.0: one request per
    connection."""

    served: dict[str, Served] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        answer = self.served.get(self.path)
        self.send_response(200 if answer is not None else 404)
        if isinstance(answer, Unannounced):
            self.end_headers()
            self.wfile.write(answer.body)
        elif isinstance(answer, Cut):
            self.send_header("Content-Length", str(answer.length))
            self.end_headers()
            self.wfile.write(answer.body)
        elif isinstance(answer, Trickle | Silent):
            self.send_header("Content-Length", str(answer.length))
            self.end_headers()
            self.wfile.flush()
            self._until_hung_up(answer)
        else:
            self.send_header("Content-Length", str(len(answer or b"")))
            self.end_headers()
            self.wfile.write(answer or b"")

    def _until_hung_up(self, answer: Trickle | Silent) -> None:
        try:
            if isinstance(answer, Silent):
                self.rfile.read(1)  # b"" once the client closed the connection
            else:
                while True:
                    self.wfile.write(b"\x1f")
                    self.wfile.flush()
                    time.sleep(answer.interval)
        except OSError:
            pass
        answer.hung_up.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(served: dict[str, Served]) -> Iterator[str]:
    """Serve ``served`` (path -> answer; it may change while serving) on a loopback port;
    yields the server's base URL."""
    handler = type("Handler", (Files,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
