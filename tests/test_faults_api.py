"""Fault suite, API: the API process SIGKILLed with requests in flight. A client sees a 202
only for a pageview that is in Redis; everything else is a connection error."""

from __future__ import annotations

import socket

import pytest
import redis

from ingest_api.openapi import PAGEVIEW_PATH
from tests.procs import Processes, wait_until
from tests.traffic import (
    Answers,
    BackgroundTraffic,
    exact_count,
    ingest_token,
    pageview,
    queued_pages,
)

pytestmark = pytest.mark.faults


def half_sent_request(port: int, secret: str) -> socket.socket:
    """A client that sent its headers and half of its body, and is still sending."""
    _, body = pageview(0)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {PAGEVIEW_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    return sock


def transport_errors(answers: Answers) -> int:
    return sum(not isinstance(answer, int) for answer in list(answers.by_page.values()))


def test_api_killed_mid_request_never_answers_202_for_what_is_not_in_redis(
    processes: Processes, real_redis: redis.Redis
) -> None:
    secret = ingest_token(real_redis)
    api = processes.api()
    slow_clients = [half_sent_request(api.port, secret) for _ in range(5)]
    traffic = BackgroundTraffic(api.url, secret, 10**9, concurrency=50)
    wait_until(lambda: len(traffic.answers.by_page) >= 2000, 60, "traffic to flow")

    api.kill()
    # Clients find out: the requests in flight end in resets, the next connections are refused.
    wait_until(lambda: transport_errors(traffic.answers) >= 50, 60, "the clients to see the API gone")
    answers = traffic.stop()

    for sock in slow_clients:
        sock.settimeout(5)
        assert sock.recv(1024) == b"", "a half-sent request got an answer from a dead API"
        sock.close()
    statuses = answers.summary()
    errors = {answer for answer in statuses if not isinstance(answer, int)}
    assert set(statuses) - errors == {202}, statuses
    assert errors, "the kill landed between requests"
    figures = exact_count("api SIGKILLed mid-request", answers, queued_pages(real_redis))
    print(f"client answers: {dict(statuses)}")
    assert (figures.duplicated, figures.lost) == (0, 0)
    # In flight when the process died: queued by Redis, but the 202 never reached the client.
    assert figures.unanswered_but_stored <= 50
