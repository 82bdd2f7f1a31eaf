"""A ClickHouse HTTP interface served over one chdb store, so that real ``hitstream`` processes
can run against an ``http://`` DSN on a machine where no ClickHouse server can be installed.

The server runs in its own process (``python -m tests.clickhouse_http``; one process owns a
chdb path) and serves the subset of ClickHouse's HTTP interface that clickhouse-connect uses
(clickhouse_connect/driver/_backend/httpcommon.py):

- the statement in the ``query`` URL parameter, in the body, or both (URL part first); an
  ``INSERT ... FORMAT X`` statement's data follows it in the body (``insert_arrow`` sends
  ``FORMAT Arrow`` with the statement at the head of the body, ``insert`` sends ``FORMAT
  Native``, its body lz4-compressed with ``Content-Encoding``). Inserts go to chdb the way
  clickhouse-connect's own chdb backend does it: the data in a temporary file,
  ``INSERT INTO ... FROM INFILE``;
- every other URL parameter is a setting for that one request (``insert_deduplication_token``,
  ``async_insert``, ...), applied with ``SET`` on a connection handle of its own, so an unknown
  setting fails as on a server; ``param_*`` are query parameters; ``database`` selects the
  database; transport parameters (``session_id``, ``query_id``, ``enable_http_compression``,
  ...) are accepted and ignored;
- answers: the result in the statement's ``FORMAT`` (``default_format`` or TabSeparated
  otherwise), ``X-ClickHouse-Summary``, ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Format``; an
  error as a server sends it: the HTTP status ClickHouse maps the error code to (500 unless
  mapped), ``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ...`` body;
- ``GET /ping`` answers ``Ok.``.

Responses are not compressed (a server may answer so), credentials are not checked, and
multipart (form-encoded) queries are not served: hitstream's statements never need them.

Faults a test switches on and off through ``/_fixture/`` (never subject to the faults):
``unavailable`` answers 503 without an exception code, as a proxy in front of a down server
does; ``hang`` accepts requests and never answers them (a frozen server or a black-holed
network: the client's ``send_receive_timeout`` is what ends the wait); refused connections are
the server process stopped (``ClickHouseHttp.stop``) and started again on the same port.
``hold-next-insert`` completes the next insert into a table and then holds its answer, telling
the test which process sent it, so the test can kill that worker between its insert and its
acknowledgement.

``ClickHouseHttp`` starts and drives the server from a test; the ``clickhouse_http`` fixture
(registered by tests/conftest.py) gives a test a running one on a fresh store.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chdb
import httpx
import lz4.frame
import psutil
import pytest
import uvicorn
from backports import zstd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.ports import free_port
from tests.procs import ARTIFACTS, wait_until

REPOSITORY = Path(__file__).resolve().parent.parent
DATABASE = "hitstream"  # as deploy/compose.yaml's CLICKHOUSE_DB: the DSN names a database
# The ways the server can be out, for ClickHouseHttp.begin_outage.
OUTAGES = ("unavailable", "hang", "refused")
# Starting the server and its engine can take tens of seconds with other suites on the two cores.
STARTUP_SECONDS = 120.0
# A worker blocked on a hanging server gives up after this long and retries (a DSN option).
SEND_RECEIVE_TIMEOUT = 5

# URL parameters that are HTTP-interface options, not settings (as chdb_backend.py lists them).
TRANSPORT_PARAMETERS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "buffer_size",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "compress",
        "decompress",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
    }
)

# ClickHouse's error code -> HTTP status (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
# keyed by the error's name, which ends chdb's exception text; anything else is 500.
STATUS_BY_ERROR = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"), 403
    ),
    **dict.fromkeys(
        (
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ),
        400,
    ),
    **dict.fromkeys(
        (
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ),
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    **dict.fromkeys(("SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"), 503),
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}
_ERROR = re.compile(r"Code: (\d+)\..*?\((\w+)\)\s*$", re.DOTALL)
_INSERT = re.compile(
    rb"\A\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<format>\w+)[ \t]*\r?\n?", re.DOTALL | re.IGNORECASE
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
_DECODERS = {
    "lz4": lz4.frame.decompress,
    "zstd": zstd.decompress,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


# ---- the server (runs in the fixture's own process) ----------------------------------------


class ServerState:
    """The fault mode, and the insert held for a test (at most one at a time)."""

    def __init__(self, store: Path, port: int) -> None:
        self.store = str(store)
        self.port = port
        self.fault: str | None = None
        self.hold_table: str | None = None
        self.held_pid: asyncio.Future[int | None] | None = None
        self.release = asyncio.Event()


def _decoded_body(request: Request, body: bytes) -> bytes:
    encoding = request.headers.get("content-encoding", "identity")
    return body if encoding == "identity" else _DECODERS[encoding](body)


def _execute(state: ServerState, parameters: dict[str, str], text: bytes) -> tuple[bytes, str | None, dict[str, Any]]:
    """Run one request's statement on a handle of its own; returns the body, its format (None:
    no result set) and the summary. Raises chdb's error for a refused statement."""
    settings = {
        name: value
        for name, value in parameters.items()
        if name not in TRANSPORT_PARAMETERS and not name.startswith("param_")
    }
    query_parameters = {
        name.removeprefix("param_"): value for name, value in parameters.items() if name.startswith("param_")
    }
    connection = chdb.connect(state.store)
    try:
        connection.query(f"USE `{parameters.get('database', 'default')}`")
        for name, value in settings.items():
            connection.query(f"SET {name} = '{_sql_quoted(value)}'")
        insert = _INSERT.match(text)
        if insert is not None:
            return _insert(connection, insert, text[insert.end() :])
        sql = text.decode()
        trailing = _TRAILING_FORMAT.search(sql)
        fmt = trailing.group(1) if trailing else parameters.get("default_format", "TabSeparated")
        if trailing:
            result = connection.query(sql, fmt, params=query_parameters)
            body = result.bytes() or b""
        else:
            # A server names the format of any result set, even an empty one; a statement without
            # one (DDL, SET) yields no bytes at all in a format *with names*, so ask for that.
            result = connection.query(sql, f"{fmt}WithNames", params=query_parameters)
            body = result.bytes() or b""
            if not body:
                fmt = None
            body = body.split(b"\n", 1)[1] if body else b""
        summary = {
            "read_rows": result.rows_read(),
            "read_bytes": result.bytes_read(),
            "written_rows": 0,
            "written_bytes": 0,
            "elapsed_ns": int(result.elapsed() * 1e9),
        }
        return body, fmt, summary
    finally:
        connection.close()


def _insert(connection: Any, insert: re.Match[bytes], data: bytes) -> tuple[bytes, None, dict[str, Any]]:
    with tempfile.NamedTemporaryFile(suffix=".insert") as file:
        file.write(data)
        file.flush()
        target, fmt = insert["target"].decode(), insert["format"].decode()
        result = connection.query(f"INSERT INTO {target} FROM INFILE '{_sql_quoted(file.name)}' FORMAT {fmt}")
    rows = result.rows_read()
    return (
        b"",
        None,
        {
            "read_rows": rows,
            "read_bytes": len(data),
            "written_rows": rows,
            "written_bytes": result.bytes_read(),
            "elapsed_ns": int(result.elapsed() * 1e9),
        },
    )


def _sql_quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _error_response(error: Exception, query_id: str) -> Response:
    message = str(error).strip()
    matched = _ERROR.search(message)
    code, name = (matched.group(1), matched.group(2)) if matched else ("1001", "STD_EXCEPTION")
    if not matched:
        message = f"Code: 1001. DB::Exception: {message}. (STD_EXCEPTION)"
    headers = {"X-ClickHouse-Exception-Code": code, "X-ClickHouse-Query-Id": query_id}
    return PlainTextResponse(message + "\n", status_code=STATUS_BY_ERROR.get(name, 500), headers=headers)


def _client_pid(server_port: int, client_port: int) -> int | None:
    """The process on the other end of one of this server's loopback connections."""
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.pid
            and connection.laddr
            and connection.raddr
            and connection.laddr.port == client_port
            and connection.raddr.port == server_port
        ):
            return connection.pid
    return None


def build_app(state: ServerState) -> Starlette:
    async def clickhouse(request: Request) -> Response:
        if state.fault == "unavailable":
            return PlainTextResponse("Service Unavailable\n", status_code=503)
        if state.fault == "hang":
            await asyncio.Event().wait()  # never answered; ends when the client gives up
        parameters = dict(request.query_params)
        body = _decoded_body(request, await request.body())
        text = (parameters["query"].encode() + b"\n" + body) if "query" in parameters else body
        query_id = parameters.get("query_id") or str(uuid.uuid4())
        try:
            payload, fmt, summary = await run_in_threadpool(_execute, state, parameters, text)
        except Exception as error:  # chdb's refusal, passed on as a server does
            return _error_response(error, query_id)
        insert = _INSERT.match(text)
        if insert is not None and state.hold_table is not None and state.hold_table in insert["target"].decode():
            # Stored; the answer waits while the test kills the process that sent the insert.
            state.hold_table = None
            client_port = request.client.port if request.client else 0
            assert state.held_pid is not None
            state.held_pid.set_result(await run_in_threadpool(_client_pid, state.port, client_port))
            await state.release.wait()
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps({name: str(value) for name, value in summary.items()}),
        }
        if fmt is not None:
            headers["X-ClickHouse-Format"] = fmt
        return Response(payload, headers=headers, media_type="application/octet-stream")

    async def ping(request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def fault(request: Request) -> Response:
        state.fault = (await request.json())["mode"]
        return JSONResponse({"fault": state.fault})

    async def hold_next_insert(request: Request) -> Response:
        state.hold_table = (await request.json())["table"]
        state.held_pid = asyncio.get_running_loop().create_future()
        state.release.clear()
        return JSONResponse({"armed": state.hold_table})

    async def held(request: Request) -> Response:
        assert state.held_pid is not None, "hold-next-insert first"
        try:
            pid = await asyncio.wait_for(asyncio.shield(state.held_pid), float(request.query_params["timeout"]))
        except TimeoutError:
            return JSONResponse({"pid": None})
        return JSONResponse({"pid": pid})

    async def release(request: Request) -> Response:
        state.hold_table = None
        state.release.set()
        return JSONResponse({"released": True})

    return Starlette(
        routes=[
            Route("/", clickhouse, methods=["GET", "POST"]),
            Route("/ping", ping),
            Route("/_fixture/fault", fault, methods=["POST"]),
            Route("/_fixture/hold-next-insert", hold_next_insert, methods=["POST"]),
            Route("/_fixture/held", held),
            Route("/_fixture/release", release, methods=["POST"]),
        ]
    )


def serve(store: Path, port: int) -> None:
    # This handle keeps the engine open (and the store locked to this process) while it serves.
    engine = chdb.connect(str(store))
    engine.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    uvicorn.run(build_app(ServerState(store, port)), host="127.0.0.1", port=port, log_level="warning")
    engine.close()


# ---- driving it from a test ------------------------------------------------------------------


class ClickHouseHttp:
    """The fixture server as a child process on a free loopback port, over the chdb ``store``."""

    def __init__(self, store: Path, log: Path) -> None:
        self.store = store
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        ARTIFACTS.add_log(log)
        ARTIFACTS.add_store(store)

    def dsn(self, send_receive_timeout: int = SEND_RECEIVE_TIMEOUT) -> str:
        """The DSN hitstream processes use, shaped like deploy/'s (user, password, database)."""
        return f"http://hitstream:secret@127.0.0.1:{self.port}/{DATABASE}?send_receive_timeout={send_receive_timeout}"

    def start(self) -> None:
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.clickhouse_http", "--store", str(self.store), "--port", str(self.port)],
                cwd=REPOSITORY,
                stdout=output,
                stderr=output,
            )

        def answers() -> bool:
            assert self.running(), f"the ClickHouse HTTP fixture exited:\n{self.log.read_text(errors='replace')}"
            try:
                return httpx.get(f"{self.url}/ping", timeout=1).text == "Ok.\n"
            except httpx.TransportError:
                return False

        try:
            wait_until(answers, STARTUP_SECONDS, "the ClickHouse HTTP fixture to answer /ping", interval=0.05)
        except BaseException:
            self.stop()  # never leave a server behind a failed start
            raise

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the server: connections are refused until ``start``."""
        if self.running():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def begin_outage(self, mode: str) -> None:
        """``unavailable`` (answer 503), ``hang`` (never answer) or ``refused`` (server stopped)."""
        assert mode in OUTAGES, mode
        if mode == "refused":
            self.stop()
        else:
            self._fault(mode)

    def end_outage(self, mode: str) -> None:
        if mode == "refused":
            self.start()
        else:
            self._fault(None)

    def _fault(self, mode: str | None) -> None:
        httpx.post(f"{self.url}/_fixture/fault", json={"mode": mode}, timeout=10).raise_for_status()

    def hold_next_insert(self, table: str) -> None:
        httpx.post(f"{self.url}/_fixture/hold-next-insert", json={"table": table}, timeout=10).raise_for_status()

    def held_insert_pid(self, timeout: float) -> int | None:
        """The pid of the process whose insert is stored and held (None: no insert came in time,
        or its sender has already gone)."""
        answer = httpx.get(f"{self.url}/_fixture/held", params={"timeout": timeout}, timeout=timeout + 10)
        return answer.raise_for_status().json()["pid"]

    def release(self) -> None:
        httpx.post(f"{self.url}/_fixture/release", timeout=10).raise_for_status()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, read over HTTP like any client of a server."""
        import clickhouse_connect

        client = clickhouse_connect.get_client(dsn=self.dsn(), autogenerate_session_id=False)
        try:
            return client.query(sql).result_rows
        finally:
            client.close()

    def stored_pages(self) -> Counter[str]:
        """The page_ids stored (with multiplicity)."""
        return Counter(str(row[0]) for row in self.query("SELECT page_id FROM pageviews"))


@pytest.fixture
def clickhouse_http(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    """A running fixture server on this test's own chdb store, stopped after the test."""
    server = ClickHouseHttp(tmp_path / "clickhouse-http-store", tmp_path / "clickhouse-http.log")
    server.start()
    yield server
    server.stop()


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--store", type=Path, required=True)
    arguments.add_argument("--port", type=int, required=True)
    options = arguments.parse_args()
    os.makedirs(options.store, exist_ok=True)
    serve(options.store, options.port)


if __name__ == "__main__":
    main()
