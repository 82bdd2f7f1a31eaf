"""The client's sender against a scripted HTTP server: Retry-After honoured, retries bounded
in time, the same ids on every try, a full queue dropping the oldest, refusals counted,
nothing raised into the caller, and delivery at exit.

The server (http.server in a thread) records every request and answers what the test's
script says, so each test controls exactly what the client sees."""

from __future__ import annotations

import asyncio
import email.utils
import http.server
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from hitstream.client import AsyncClient, Client, Options
from tests.ports import free_port
from tests.procs import Commands, wait_until
from tests.timing import late_bound

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: Any


Answer = tuple[int, dict[str, str], bytes]


def accepted(received: Received) -> Answer:
    items = len(received.body) if isinstance(received.body, list) else 1
    return 202, {}, orjson.dumps({"accepted": items, "rejected": []})


@dataclass
class ScriptedServer:
    """Answers request number n (from 0) with ``script(n, request)``."""

    script: Callable[[int, Received], Answer] = lambda n, received: accepted(received)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def page_ids(self) -> list[str]:
        return [item["page_id"] for request in self.received if request.path.endswith("s") for item in request.body]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            request = Received(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                number = len(scripted.received)
                scripted.received.append(request)
            status, headers, answer = scripted.script(number, request)
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield scripted
    httpd.shutdown()
    httpd.server_close()


def fast(**overrides: Any) -> Options:
    return Options(**{"batch_items": 5, "flush_interval": 0.05, "max_retry_seconds": 30.0, **overrides})


def send(client: Client | AsyncClient, count: int) -> list[str]:
    return [client.send_pageview(f"https://example.com/p/{n}", "198.51.100.77", UA) for n in range(count)]


def retry_after_in(seconds: int) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


def test_a_full_batch_goes_out_at_once_and_a_partial_one_after_the_flush_interval(server: ScriptedServer) -> None:
    # An interval longer than the wait: only the size trigger can send the full batch in time.
    by_size = Client(server.url, "secret", Options(batch_items=5, flush_interval=3600))
    full = send(by_size, 5)
    wait_until(lambda: len(server.received) == 1, 60, "the full batch")
    by_size.close()
    by_time = Client(server.url, "secret", Options(batch_items=5, flush_interval=1.5))
    sending_partial = time.monotonic()
    partial = send(by_time, 2)
    wait_until(lambda: len(server.received) == 2, 60, "the partial batch")
    by_time.close()
    assert server.received[1].at - sending_partial >= 1.5  # the time trigger: not before the interval
    assert server.page_ids() == full + partial


@pytest.mark.parametrize(
    ("status", "retry_after", "at_least"),
    [(503, "1", 1.0), (429, "1", 1.0), (429, "2", 2.0), (503, "http-date", 1.0)],
    ids=["503", "429", "429-two-seconds", "503-http-date"],
)
def test_a_refusal_with_retry_after_is_sent_again_no_sooner_than_asked_with_the_same_ids(
    server: ScriptedServer, status: int, retry_after: str, at_least: float
) -> None:
    header = retry_after_in(2) if retry_after == "http-date" else retry_after
    server.script = lambda n, received: (
        (status, {"Retry-After": header}, b'{"message": "busy"}') if n == 0 else accepted(received)
    )
    client = Client(server.url, "secret", fast())
    page_ids = send(client, 5)

    assert client.flush(timeout=15)
    client.close()

    first, second = server.received
    # Never sooner than asked; later only by the jitter (at most 25%) and the machine's delays.
    assert at_least <= second.at - first.at < late_bound(at_least)
    assert first.body == second.body
    assert [item["page_id"] for item in second.body] == page_ids
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert (client.stats.delivered, client.stats.retries, client.stats.dropped) == (5, 1, 0)


@pytest.mark.parametrize("failure", ["503 without Retry-After", "500", "connection refused"])
def test_retries_stop_after_the_bounded_time_counted_and_never_raised(server: ScriptedServer, failure: str) -> None:
    statuses = {"503 without Retry-After": 503, "500": 500}
    server.script = lambda n, received: (statuses.get(failure, 503), {}, b"")
    url = f"http://127.0.0.1:{free_port()}" if failure == "connection refused" else server.url
    client = Client(url, "secret", fast(max_retry_seconds=1.5))
    started = time.monotonic()
    send(client, 12)

    assert client.flush(timeout=15)  # nothing left waiting: all of it dropped after its retry bound
    elapsed = time.monotonic() - started
    client.close()

    assert client.stats.dropped_retry_limit == 12
    assert (client.stats.delivered, client.stats.rejected) == (0, 0)
    assert client.stats.retries >= 3  # backoff 0.1, 0.2, 0.4 s ... within 1.5 s
    # A retry that would start past the bound is not made: dropped within it, after several tries.
    assert 0.5 < elapsed < late_bound(1.5)
    if failure != "connection refused":
        first_tries = len({request.headers["idempotency-key"] for request in server.received})
        assert len(server.received) == client.stats.retries + first_tries


def test_a_full_queue_drops_the_oldest_and_counts_it_without_blocking(server: ScriptedServer) -> None:
    release = threading.Event()

    def held_first(n: int, received: Received) -> Answer:
        if n == 0:
            release.wait(120)
        return accepted(received)

    server.script = held_first
    client = Client(server.url, "secret", fast(batch_items=1, max_in_flight=1, max_queue=10))
    first = send(client, 1)
    wait_until(lambda: len(server.received) == 1, 60, "the first pageview to reach the server")

    later = send(client, 25)  # the sender is stuck on the first request: the queue fills up
    # Returned while the first request was still held: sending never waited for the sender.
    assert not release.is_set() and len(server.received) == 1
    assert client.stats.dropped_queue_full == 15

    release.set()
    assert client.flush(timeout=15)
    client.close()
    assert server.page_ids() == first + later[15:]
    assert (client.stats.queued, client.stats.delivered, client.stats.dropped) == (26, 11, 15)


def test_items_the_api_refuses_are_counted_as_rejected_and_never_raised(server: ScriptedServer) -> None:
    answers = [
        (401, {}, b'{"message": "Unauthorized"}'),
        (202, {}, orjson.dumps({"accepted": 3, "rejected": [{"index": 1, "status": 400, "message": "x"}] * 2})),
        (
            400,
            {},
            orjson.dumps(
                {
                    "accepted": 0,
                    "rejected": [{"index": i, "status": 404, "message": "Site not found"} for i in range(5)],
                }
            ),
        ),
    ]
    server.script = lambda n, received: answers[n]
    client = Client(server.url, "secret", fast(max_in_flight=1))
    for _ in answers:
        send(client, 5)
        assert client.flush(timeout=10)
    client.close()

    assert len(server.received) == 3
    assert (client.stats.delivered, client.stats.rejected, client.stats.retries) == (3, 12, 0)


def test_events_go_one_by_one_to_the_event_endpoint_each_with_its_own_event_id(server: ScriptedServer) -> None:
    client = Client(server.url, "secret", fast())
    page_id = client.send_pageview("https://example.com/cart", "198.51.100.77", UA)
    event_ids = [
        client.send_event(
            name, "https://example.com/cart", "198.51.100.77", UA, page_id=page_id, properties={"value": 3.5}
        )
        for name in ("add_to_cart", "checkout")
    ]
    assert client.flush(timeout=10)
    client.close()

    events = [request.body for request in server.received if request.path == "/api/ingest/server/event"]
    assert sorted((event["name"], event["event_id"], event["page_id"]) for event in events) == [
        ("add_to_cart", event_ids[0], page_id),
        ("checkout", event_ids[1], page_id),
    ]
    assert [event["properties"] for event in events] == [{"value": 3.5}] * 2
    assert server.page_ids() == [page_id]
    assert all(request.headers["authorization"] == "Bearer secret" for request in server.received)
    assert client.stats.delivered == 3


def test_the_async_client_sends_from_the_applications_loop(server: ScriptedServer) -> None:
    async def application() -> tuple[list[str], bool]:
        async with AsyncClient(server.url, "secret", fast()) as client:
            page_ids = send(client, 7)
            flushed = await client.flush(timeout=10)
        return page_ids, flushed and client.stats.delivered == 7

    page_ids, delivered = asyncio.run(application())
    assert delivered
    assert sorted(server.page_ids()) == sorted(page_ids)


_EXITS_WITHOUT_CLOSING = """
import asyncio, sys
from hitstream.client import AsyncClient, Client, Options
options = Options(flush_interval=60)  # only the exit handler can deliver
ua = "Mozilla/5.0"
if sys.argv[2] == "sync":
    client = Client(sys.argv[1], "secret", options)
    for n in range(3):
        client.send_pageview(f"https://example.com/{n}", "198.51.100.77", ua)
else:
    async def main():
        client = AsyncClient(sys.argv[1], "secret", options)
        for n in range(3):
            client.send_pageview(f"https://example.com/{n}", "198.51.100.77", ua)
    asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_what_is_queued_at_exit_is_delivered(commands: Commands, server: ScriptedServer, kind: str) -> None:
    commands.run([sys.executable, "-c", _EXITS_WITHOUT_CLOSING, server.url, kind], check=True, timeout=60)
    assert [item["url"] for item in server.received[0].body] == [f"https://example.com/{n}" for n in range(3)]


def test_importing_the_client_pulls_in_no_server_code_and_no_store_library(commands: Commands) -> None:
    check = textwrap.dedent(
        """
        import sys
        import hitstream.client, hitstream.client.asgi, hitstream.client.wsgi
        heavy = ("chdb", "pyarrow", "clickhouse_connect", "redis", "rq", "ingest_api", "workers", "starlette")
        print(sorted(name for name in sys.modules if name.split(".")[0] in heavy))
        """
    )
    output = commands.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


_FORKS_AFTER_SENDING = """
import os, sys
from hitstream.client import Client, Options
client = Client(sys.argv[1], "secret", Options(flush_interval=0.05))
client.send_pageview("https://example.com/parent-before-fork", "198.51.100.77", "Mozilla/5.0")
pid = os.fork()
if pid == 0:
    client.send_pageview("https://example.com/child", "198.51.100.77", "Mozilla/5.0")
    os._exit(0 if client.flush(timeout=10) else 1)
client.send_pageview("https://example.com/parent-after-fork", "198.51.100.77", "Mozilla/5.0")
assert client.flush(timeout=10)
assert os.waitpid(pid, 0)[1] == 0
"""


def test_a_forked_child_sends_with_a_sender_of_its_own(commands: Commands, server: ScriptedServer) -> None:
    commands.run([sys.executable, "-c", _FORKS_AFTER_SENDING, server.url], check=True, timeout=60)
    urls = sorted(item["url"] for request in server.received for item in request.body)
    assert urls == [f"https://example.com/{name}" for name in ("child", "parent-after-fork", "parent-before-fork")]
