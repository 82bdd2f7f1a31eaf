"""The sender and the whole command against a stub HTTP server that implements the documented
endpoint contract (single and batch). The batch endpoint is not built yet: once it is, point
the batch tests at the real API (ingest_api) instead of this stub."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hitstream.commands.replay import replay
from hitstream.replay.sender import Batch, Sender
from tests.procs import Commands, wait_until

TOKEN = "secret-token"


class StubIngest:
    """Answers like the ingest API: 202, or 400 for a url containing "bad"; the first
    ``busy_answers`` requests get 429 with ``Retry-After: 1``. With ``hold_after``, a single
    pageview arriving once that many were accepted waits for ``released`` before its answer."""

    def __init__(self, busy_answers: int = 0, hold_after: int | None = None) -> None:
        self.busy_answers = busy_answers
        self.hold_after = hold_after
        self.released = threading.Event()
        self.accepted: list[dict] = []
        self.busy_at: list[float] = []
        self.requests = 0
        self.app = Starlette(
            routes=[
                Route("/api/ingest/server/pageview", self.single, methods=["POST"]),
                Route("/api/ingest/server/pageviews", self.batch, methods=["POST"]),
            ]
        )

    def _busy(self, request: Request) -> Response | None:
        self.requests += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"message": "Unauthorized"}, 401)
        if self.busy_answers > 0:
            self.busy_answers -= 1
            self.busy_at.append(time.monotonic())
            return JSONResponse({"message": "Too Many Requests"}, 429, {"Retry-After": "1"})
        return None

    @staticmethod
    def _problem(body: dict) -> str | None:
        return "url must be an absolute http or https URL" if "bad" in body["url"] else None

    async def single(self, request: Request) -> Response:
        if self.hold_after is not None and len(self.accepted) >= self.hold_after:
            while not self.released.is_set():
                await asyncio.sleep(0.01)
        if answer := self._busy(request):
            return answer
        body = orjson.loads(await request.body())
        if problem := self._problem(body):
            return JSONResponse({"message": problem}, 400)
        self.accepted.append(body)
        return Response(status_code=202)

    async def batch(self, request: Request) -> Response:
        if answer := self._busy(request):
            return answer
        items = orjson.loads(await request.body())
        rejected = []
        for index, body in enumerate(items):
            if problem := self._problem(body):
                rejected.append({"index": index, "status": 400, "message": problem})
            else:
                self.accepted.append(body)
        content = {"accepted": len(items) - len(rejected), "rejected": rejected}
        return JSONResponse(content, 400 if len(rejected) == len(items) else 202)


@pytest.fixture
def serve() -> Iterator:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(stub: StubIngest) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(stub.app, log_level="critical", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(5)


def send(url: str, bodies: list[dict], *, batch: bool) -> tuple[list, Counter[str]]:
    async def go() -> list:
        async with aiohttp.ClientSession() as session:
            sender = Sender(session, url, TOKEN, batch=batch, retries=retries)
            work = Batch()
            for line, body in enumerate(bodies, start=1):
                work.add(line, orjson.dumps(body))
            return await sender.send(work)

    retries: Counter[str] = Counter()
    return asyncio.run(go()), retries


def test_429_waits_for_retry_after_then_sends_the_same_pageview(serve) -> None:
    stub = StubIngest(busy_answers=1)
    url = serve(stub)
    [answer], retries = send(url, [{"url": "https://example.com/"}], batch=False)
    assert answer.accepted and answer.line == 1
    assert stub.accepted == [{"url": "https://example.com/"}]
    assert retries == Counter({"429": 1})
    assert time.monotonic() - stub.busy_at[0] >= 1.0  # honoured Retry-After: 1


def test_batch_answers_each_item_by_index(serve) -> None:
    url = serve(StubIngest())
    answers, _ = send(url, [{"url": "https://example.com/"}, {"url": "bad"}], batch=True)
    assert [(a.line, a.status, a.message) for a in answers] == [
        (1, 202, ""),
        (2, 400, "url must be an absolute http or https URL"),
    ]
    answers, _ = send(url, [{"url": "bad"}], batch=True)  # all rejected: 400 with the same body
    assert [(a.line, a.status) for a in answers] == [(1, 400)]


def test_rejected_token_rejects_every_line_with_the_servers_message(serve) -> None:
    url = serve(StubIngest())

    async def go() -> list:
        async with aiohttp.ClientSession() as session:
            work = Batch()
            work.add(7, b'{"url": "https://example.com/"}')
            return await Sender(session, url, "wrong", batch=False, retries=Counter()).send(work)

    [answer] = asyncio.run(go())
    assert (answer.line, answer.status, answer.message) == (7, 401, "Unauthorized")


def test_connection_errors_back_off_until_the_server_answers(serve, tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens yet
    stub = StubIngest()

    async def go() -> list:
        async with aiohttp.ClientSession() as session:
            work = Batch()
            work.add(1, b'{"url": "https://example.com/"}')
            sender = Sender(session, f"http://127.0.0.1:{port}", TOKEN, batch=False, retries=retries)
            sending = asyncio.create_task(sender.send(work))
            await asyncio.sleep(0.5)
            listener = socket.socket()
            listener.bind(("127.0.0.1", port))
            server = uvicorn.Server(uvicorn.Config(stub.app, log_level="critical", lifespan="off"))
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            try:
                return await asyncio.wait_for(sending, 10)
            finally:
                server.should_exit = True
                await serving

    retries: Counter[str] = Counter()
    [answer] = asyncio.run(go())
    assert answer.accepted and len(stub.accepted) == 1
    assert retries["connection error (ClientConnectorError)"] >= 2


LOG = '203.0.113.{n} - - [10/Oct/2025:10:{m:02d}:00 +0000] "GET /p/{n} HTTP/1.1" 200 1 "-" "UA {n}"\n'


def test_combined_log_replays_through_the_batch_endpoint_and_resumes(serve, tmp_path: Path) -> None:
    stub = StubIngest(busy_answers=1)
    url = serve(stub)
    log = tmp_path / "access.log"
    lines = [LOG.format(n=n, m=n) for n in range(1, 41)]
    lines[9] = "garbage\n"
    lines[19] = lines[19].replace("/p/20", "/p/20.css")
    log.write_text("".join(lines))
    args = [
        str(log),
        "--format",
        "combined",
        "--site-url",
        "https://example.com",
        "--url",
        url,
        "--token",
        TOKEN,
        "--batch-size",
        "7",
        "--concurrency",
        "3",
        "--sessions",
    ]

    result = CliRunner().invoke(replay, args)
    assert result.exit_code == 0, result.output
    assert "accepted: 38" in result.output
    assert "rejected: 1" in result.output and "not sent  not a combined log line" in result.output
    assert "asset .css" in result.output and "retried requests: 1 (429: 1)" in result.output
    assert sorted(int(b["url"].rsplit("/", 1)[1]) for b in stub.accepted) == sorted(set(range(1, 41)) - {10, 20})
    assert len({b["page_id"] for b in stub.accepted}) == 38
    assert len({b["session_id"] for b in stub.accepted}) == 38  # one visitor per IP
    assert (tmp_path / "access.log.rejects.ndjson").read_text() == (
        '{"line":10,"status":null,"message":"not a combined log line"}\n'
    )

    # Everything is done: running again sends nothing and keeps the rejects file.
    result = CliRunner().invoke(replay, args)
    assert result.exit_code == 0, result.output
    assert len(stub.accepted) == 38
    assert "already done by an earlier run (resumed): 40 lines" in result.output
    assert "accepted: 38" in result.output
    assert (tmp_path / "access.log.rejects.ndjson").read_text().count("\n") == 1

    result = CliRunner().invoke(replay, [*args, "--restart"])
    assert result.exit_code == 0, result.output
    assert len(stub.accepted) == 76
    assert {b["page_id"] for b in stub.accepted[38:]} == {b["page_id"] for b in stub.accepted[:38]}


def test_resume_refuses_a_changed_file_or_options(serve, tmp_path: Path) -> None:
    url = serve(StubIngest())
    log = tmp_path / "access.log"
    log.write_text(LOG.format(n=1, m=1))
    args = [str(log), "--format", "combined", "--url", url, "--token", TOKEN, "--quiet"]
    assert CliRunner().invoke(replay, [*args, "--site-url", "https://example.com"]).exit_code == 0
    result = CliRunner().invoke(replay, [*args, "--site-url", "https://example.org"])
    assert result.exit_code == 1 and "different options (site_url)" in result.output
    log.write_text(LOG.format(n=2, m=2))
    result = CliRunner().invoke(replay, [*args, "--site-url", "https://example.com"])
    assert result.exit_code == 1 and "different input file" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "combined"], "--format combined needs --site-url"),
        (["--format", "combined", "--site-url", "example.com"], "--site-url"),
        (["--sessions"], "apply to --format combined only"),
        (["--format", "combined", "--site-url", "https://e.com", "--statuses", "2xx"], "--statuses"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, args: list[str], message: str) -> None:
    views = tmp_path / "views.log"
    views.write_text("\n")
    result = CliRunner().invoke(replay, [str(views), "--url", "http://127.0.0.1:9", "--token", "t", *args])
    assert result.exit_code == 2 and message in result.output


def test_sigterm_saves_the_journal_and_the_next_run_finishes(commands: Commands, serve, tmp_path: Path) -> None:
    stub = StubIngest(hold_after=100)
    url = serve(stub)
    views = tmp_path / "views.ndjson"
    views.write_bytes(b"".join(orjson.dumps({"url": f"https://example.com/{n}"}) + b"\n" for n in range(1, 601)))
    args = [str(views), "--url", url, "--token", TOKEN, "--quiet", "--concurrency", "4"]
    hitstream = [sys.executable, "-m", "hitstream", "replay"]
    process = commands.start([*hitstream, *args], stderr=subprocess.PIPE, text=True)
    # The stub holds every request after the first 100: the SIGTERM lands mid-replay however
    # slowly either side runs.
    wait_until(lambda: len(stub.accepted) >= 100, 60, "100 lines to be accepted")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    stub.released.set()
    assert process.returncode == 130
    assert "interrupted; finished lines are recorded" in stderr
    stopped_at = len(stub.accepted)
    assert 100 <= stopped_at < 100 + 4  # those answered before the hold, at most 4 in flight

    result = CliRunner().invoke(replay, args)
    assert result.exit_code == 0, result.output
    assert "accepted: 600" in result.output
    urls = [body["url"] for body in stub.accepted]
    assert set(urls) == {f"https://example.com/{n}" for n in range(1, 601)}
    # The state saved on SIGTERM covers every answered line; at most the 4 in flight repeat.
    assert len(urls) - 600 <= 4
