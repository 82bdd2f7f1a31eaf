"""One client must not hurt the others, against real ``hitstream api`` processes: hundreds of
silent, dribbling or stalled connections, and connections past the cap, while a normal client
keeps posting; and the time limits that close the slow ones (ingest_api.connections)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from ingest_api.connections import SWEEP_SECONDS
from ingest_api.openapi import PAGEVIEW_PATH
from tests.procs import Api, Processes, wait_until
from tests.traffic import BackgroundTraffic, ingest_token, pageview

SLOW_CLIENTS = 300
# Long enough that the slow connections are certainly still open while a normal client posts
# its few requests on a loaded machine (checked, not assumed: still_open).
HEADER_TIMEOUT = 8.0
BODY_TIMEOUT = 8.0
# "In time": a limit fires between its value and two sweeps after it (ingest_api.connections);
# allowed here, up to twice its value, so only a limit enforced late, or never, is caught.
LATE = max(HEADER_TIMEOUT, 2 * SWEEP_SECONDS)
LIMITS = {"HITSTREAM_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "HITSTREAM_BODY_TIMEOUT": str(BODY_TIMEOUT)}
# The interim answer to a request head with "Expect: 100-continue", sent once the application
# asks for the body: the head is in and the connection carries a request.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def connect(api: Api) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # hundreds of them: keep it small
    return sock


def head(secret: str, length: int, path: str = PAGEVIEW_PATH, expect_continue: bool = False) -> bytes:
    expect = "Expect: 100-continue\r\n" if expect_continue else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{expect}\r\n"
    ).encode()


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither closed the connection nor sent anything on it yet
    (readable: an answer, the connection's end or a reset waits to be read)."""
    # poll, not select: the test process may hold descriptors numbered past select's 1024.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def received(sock: socket.socket, size: int) -> bytes:
    """The next ``size`` bytes the server sends (fewer only if it closes the connection)."""
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


class Dribbler:
    """Sends one more byte of a request head on each connection every second, in a thread."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._sockets = sockets
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for sock in self._sockets:
                try:
                    sock.sendall(b"a")
                except OSError:  # closed by the server: what the test waits for
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def secret(real_redis: redis.Redis) -> str:
    return ingest_token(real_redis)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def open_silent(api: Api, secret: str, count: int) -> list[socket.socket]:
    return [connect(api) for _ in range(count)]


def open_dribbling(api: Api, secret: str, count: int) -> list[socket.socket]:
    opened = [connect(api) for _ in range(count)]
    for sock in opened:
        sock.sendall(f"POST {PAGEVIEW_PATH} HTTP/1.1\r\nHost: loc".encode())
    return opened


def open_stalled(api: Api, secret: str, count: int) -> list[socket.socket]:
    """Request heads promising a body that never comes."""
    opened = [connect(api) for _ in range(count)]
    for sock in opened:
        sock.sendall(head(secret, 1000) + b'{"url": ')
    return opened


def post_fresh(api: Api, secret: str, number: int) -> int:
    """One pageview on a new connection."""
    _, body = pageview(number)
    return httpx.post(
        api.url + PAGEVIEW_PATH,
        content=body,
        timeout=30,
        headers={"Authorization": f"Bearer {secret}", "Connection": "close"},
    ).status_code


def assert_a_normal_client_gets_202_meanwhile(api: Api, secret: str) -> None:
    """Keep-alive traffic and posts on fresh connections: every one is a 202."""
    traffic = BackgroundTraffic(api.url, secret, count=20, concurrency=2)
    statuses = [post_fresh(api, secret, number) for number in range(3)]
    answers = traffic.wait()
    assert statuses == [202] * 3
    assert answers.summary() == {202: 20}


Opener = Callable[[Api, str, int], list[socket.socket]]


@pytest.mark.parametrize(
    "open_slow, answered",
    [(open_silent, b""), (open_dribbling, b""), (open_stalled, b"HTTP/1.1 408 Request Timeout")],
    ids=["silent", "dribbling-head", "stalled-body"],
)
def test_a_normal_client_gets_202_while_hundreds_of_slow_connections_are_open_and_they_are_closed_in_time(
    processes: Processes, secret: str, sockets: list[socket.socket], open_slow: Opener, answered: bytes
) -> None:
    api = processes.api(**LIMITS)
    opened_at = time.monotonic()  # before the first connection: no limit can fire sooner after it
    sockets += open_slow(api, secret, SLOW_CLIENTS)
    dribbler = Dribbler(sockets) if open_slow is open_dribbling else None
    try:
        assert_a_normal_client_gets_202_meanwhile(api, secret)
        assert all(still_open(sock) for sock in sockets), "the slow clients were not all open meanwhile"
        answers = [read_until_closed(sock) for sock in sockets]  # returns once the server closed it
        closed_after = time.monotonic() - opened_at
    finally:
        if dribbler is not None:
            dribbler.stop()
    assert all(answer.startswith(answered) for answer in answers), {answer[:40] for answer in answers}
    print(f"\nFIGURES {len(sockets)} slow connections, limit {HEADER_TIMEOUT} s: all closed after {closed_after:.1f} s")
    assert HEADER_TIMEOUT <= closed_after < HEADER_TIMEOUT + LATE
    assert post_fresh(api, secret, 0) == 202


@pytest.mark.parametrize("open_slow", [open_silent, open_dribbling], ids=["silent", "partial-head"])
def test_past_the_cap_a_new_connection_closes_the_one_that_waited_longest_for_a_request_head(
    processes: Processes, secret: str, sockets: list[socket.socket], open_slow: Opener
) -> None:
    cap = 50
    api = processes.api(HITSTREAM_MAX_CONNECTIONS=str(cap), HITSTREAM_HEADER_TIMEOUT="60")
    sockets += open_slow(api, secret, SLOW_CLIENTS)
    assert_a_normal_client_gets_202_meanwhile(api, secret)
    # Each connection made room when it came (the closes were sent before its own answer).
    open_now = [still_open(sock) for sock in sockets]
    # The newest survive, the oldest were closed to make room; never more than the cap.
    print(f"\nFIGURES {SLOW_CLIENTS} connections against a cap of {cap}: {sum(open_now)} still open")
    assert 0 < sum(open_now) <= cap
    assert open_now[-1] and not any(open_now[: SLOW_CLIENTS - cap])


def test_past_the_cap_with_every_connection_carrying_a_request_a_new_one_gets_503_at_once(
    processes: Processes, secret: str, sockets: list[socket.socket]
) -> None:
    cap = 50
    # Limits far beyond the test's length: no connection is closed by a limit meanwhile.
    api = processes.api(
        HITSTREAM_MAX_CONNECTIONS=str(cap), HITSTREAM_HEADER_TIMEOUT="300", HITSTREAM_BODY_TIMEOUT="300"
    )
    bodies = [pageview(number)[1] for number in range(cap)]
    sockets += [connect(api) for _ in bodies]
    for sock, body in zip(sockets, bodies, strict=True):
        sock.sendall(head(secret, len(body), expect_continue=True))
    # Each head is in and the application awaits its body: every connection carries a request.
    assert [received(sock, len(CONTINUE)) for sock in sockets] == [CONTINUE] * cap
    slowest = 0.0
    for _ in range(5):
        started = time.monotonic()
        with connect(api) as over:
            # Refused at once, or it would wait in silence for a limit 300 s away (its socket
            # gives up after 30 s): the answer is the proof, not the time it took.
            answer = read_until_closed(over)
        slowest = max(slowest, time.monotonic() - started)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable") and b"retry-after: 1\r\n" in answer
    assert all(still_open(sock) for sock in sockets), "a request was closed to make room"
    print(f"\nFIGURES over the cap: 503 and closed within {slowest * 1000:.1f} ms (slowest of 5)")
    # The waiting requests were never disturbed: their bodies complete them, and there is room again.
    for sock, body in zip(sockets, bodies, strict=True):
        sock.sendall(body)
    assert [received(sock, len(b"HTTP/1.1 202")) for sock in sockets] == [b"HTTP/1.1 202"] * cap
    # Now idle keep-alive connections: the next sweep lists them to make room for new ones.
    wait_until(lambda: post_fresh(api, secret, cap) == 202, 30, "room for a new connection")
