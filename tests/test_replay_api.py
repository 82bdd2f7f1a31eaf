"""Acceptance: replay through the real ingest API (``hitstream api``) with a rate limit low
enough to force 429s, killed mid-way and resumed. Every valid line ends up in the Redis stream
under its deterministic page_id, bad lines are in the rejects file, nothing is missing or extra.

A line whose 202 arrived after the last journal save is sent again when resumed; it carries
the same deterministic page_id, so the API answers 202 without queueing it twice.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
import redis

from hitstream.replay.inputfile import file_identity, page_id_for
from shared import keys
from shared.envelope import Envelope
from tests.procs import HITSTREAM, Processes, wait_until
from tests.traffic import ingest_token

LINES = 2000
BAD_LINES = {  # line -> (status, message) in the rejects file
    100: (400, "url must be an absolute http or https URL"),
    700: (404, "Site not found"),
    1300: (None, "not valid JSON"),
    1900: (400, "visitor_ip must be a valid IP address"),
}


def pageview_line(line: int) -> bytes:
    body = {
        "url": f"https://example.com/page/{line}?utm_source=replay",
        "timestamp": "2025-10-10T10:00:00Z",
        "visitor_ip": f"198.51.100.{line % 250 + 1}",
        "user_agent": "Mozilla/5.0 replay-test",
    }
    if line == 100:
        body["url"] = "example.com/no-scheme"
    elif line == 700:
        body["url"] = "https://unknown.example/"
    elif line == 1900:
        body["visitor_ip"] = "not-an-ip"
    elif line == 1300:
        return b'{"url": "https://example.com/", '
    return orjson.dumps(body)


@pytest.fixture
def api_url(processes: Processes) -> str:
    """A real ``hitstream api`` whose rate limit is low enough to answer some requests 429."""
    return processes.api(HITSTREAM_RATE_LIMIT="300", HITSTREAM_RATE_BURST="10").url


def test_replay_with_429s_killed_and_resumed_sends_every_line_once(
    api_url: str, real_redis: redis.Redis, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    secret = ingest_token(real_redis, bulk=True)
    views = tmp_path / "views.ndjson"
    views.write_bytes(b"\n".join(pageview_line(n) for n in range(1, LINES + 1)) + b"\n")
    state = tmp_path / "views.ndjson.state.json"
    command = [HITSTREAM, "replay", str(views), "--url", api_url, "--quiet", "--concurrency", "16"]
    env = {**hitstream_env, "HITSTREAM_TOKEN": secret}

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def past_a_third() -> bool:
        assert first.poll() is None, first.communicate()
        return state.exists() and orjson.loads(state.read_bytes())["watermark"] > LINES // 3

    try:
        wait_until(past_a_third, 120, "the replay to journal a third of the file")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    journaled_before_kill = orjson.loads(state.read_bytes())["tally"]["accepted"]
    # Any moment after the kill will do: a journaled line was answered 202, so it is queued
    # already, and what the API still finishes of the killed client's requests (16 in flight
    # at most) leaves the stream far short of the whole file.
    sent_before_kill = real_redis.xlen(keys.BULK_STREAM)
    assert 0 < journaled_before_kill <= sent_before_kill < LINES

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert f"accepted: {LINES - len(BAD_LINES)}" in finished.stdout
    assert f"rejected: {len(BAD_LINES)}" in finished.stdout
    assert "retried requests" in finished.stdout and "429" in finished.stdout

    page_ids = [
        Envelope.from_json(fields[keys.ENVELOPE_FIELD.encode()]).page_id
        for _, fields in real_redis.xrange(keys.BULK_STREAM)
    ]
    identity = file_identity(views)
    expected = {page_id_for(identity, n) for n in range(1, LINES + 1) if n not in BAD_LINES}
    assert sorted(page_ids) == sorted(expected)  # every valid line queued exactly once

    rejects = [orjson.loads(raw) for raw in (tmp_path / "views.ndjson.rejects.ndjson").read_bytes().splitlines()]
    assert {r["line"]: (r["status"], r["message"]) for r in rejects} == BAD_LINES
    assert len(rejects) == len(BAD_LINES)


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
COMBINED_LOG = [
    f'203.0.113.9 - - [10/Oct/2025:13:55:36 +0000] "GET /pricing?utm_source=ads HTTP/1.1" 200 2326 '
    f'"https://www.google.com/" "{FIREFOX}"',
    f'203.0.113.9 - - [10/Oct/2025:13:56:01 +0000] "GET /app.css HTTP/1.1" 200 512 "-" "{FIREFOX}"',
    '2001:db8::42 - - [10/Oct/2025:13:57:00 +0000] "GET /docs HTTP/2.0" 200 900 "-" "curl/8.5.0"',
    f'203.0.113.9 - - [10/Oct/2025:13:58:10 +0000] "GET /old HTTP/1.1" 301 0 "-" "{FIREFOX}"',
    "this is not a log line",
    f'203.0.113.9 - - [10/Oct/2025:13:59:00 +0000] "GET /blog HTTP/1.1" 200 4000 "-" "{FIREFOX}"',
    f'203.0.113.9 - - [10/Oct/2025:15:00:00 +0000] "GET /blog/2 HTTP/1.1" 200 4000 "-" "{FIREFOX}"',
]


def test_combined_gzip_log_replays_through_the_real_batch_endpoint_with_sessions(
    api_url: str, real_redis: redis.Redis, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    secret = ingest_token(real_redis, bulk=True)
    log = tmp_path / "access.log.gz"
    log.write_bytes(gzip.compress(("\n".join(COMBINED_LOG) + "\n").encode()))
    command = [
        HITSTREAM,
        "replay",
        "--format",
        "combined",
        str(log),
        "--site-url",
        "https://example.com",
        "--url",
        api_url,
        "--quiet",
        "--sessions",
    ]
    finished = subprocess.run(
        command, env={**hitstream_env, "HITSTREAM_TOKEN": secret}, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert "accepted: 4" in finished.stdout

    envelopes = [
        Envelope.from_json(fields[keys.ENVELOPE_FIELD.encode()]) for _, fields in real_redis.xrange(keys.BULK_STREAM)
    ]
    by_path = {e.url.removeprefix("https://example.com"): e for e in envelopes}
    assert sorted(by_path) == ["/blog", "/blog/2", "/docs", "/pricing?utm_source=ads"]
    assert by_path["/docs"].visitor_ip == "2001:db8::42"
    assert by_path["/pricing?utm_source=ads"].referrer == "https://www.google.com/"
    # One visitor within 30 minutes is one session; after an hour of silence a new one starts.
    assert by_path["/pricing?utm_source=ads"].session_id == by_path["/blog"].session_id
    assert by_path["/blog/2"].session_id != by_path["/blog"].session_id
    assert by_path["/docs"].session_id != by_path["/blog"].session_id
    rejects = (tmp_path / "access.log.gz.rejects.ndjson").read_text()
    assert '"line":5' in rejects.replace(" ", "")
