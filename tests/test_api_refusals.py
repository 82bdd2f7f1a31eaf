"""Refused work is cheap and leaves nothing behind, against real ``hitstream api`` processes: a
spent token is answered 429 before its body is sent, Idempotency-Key replays are charged,
and a request refused whole leaves no retry key and no stored answer in Redis."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx
import orjson
import pytest
import redis

from ingest_api.batch import MAX_BATCH_BYTES
from ingest_api.openapi import BATCH_PATH, EVENT_PATH, PAGEVIEW_PATH
from ingest_api.validation import MAX_BODY_BYTES
from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token
from tests.procs import Api, Processes
from tests.test_api_connections import head
from tests.traffic import ingest_token, pageview

RATE_HEADERS = {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"}


def items(count: int, host: str = "example.com", **changes: Any) -> list[dict[str, Any]]:
    return [{**orjson.loads(pageview(number, host)[1]), **changes} for number in range(count)]


def post(api: Api, secret: str, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        api.url + path, content=orjson.dumps(body), timeout=30, headers={"Authorization": f"Bearer {secret}", **headers}
    )


def read_answer_head(sock: socket.socket) -> tuple[str, dict[str, str]]:
    """The status line and headers (lower-case) of the answer on ``sock``."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {received!r}"
        received += chunk
    status_line, *lines = received.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    return status_line, dict(line.lower().split(": ", 1) for line in lines)


def evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.parametrize(
    "path, promised",
    [(BATCH_PATH, MAX_BATCH_BYTES), (PAGEVIEW_PATH, MAX_BODY_BYTES), (EVENT_PATH, MAX_BODY_BYTES)],
    ids=["batch-1MiB", "pageview", "event"],
)
def test_a_spent_tokens_request_is_answered_429_before_its_body_is_sent(
    processes: Processes, real_redis: redis.Redis, path: str, promised: int
) -> None:
    secret = ingest_token(real_redis)
    api = processes.api(HITSTREAM_RATE_LIMIT="1", HITSTREAM_RATE_BURST="10")
    # 1000 items from a full bucket of 10: accepted, and the bucket is 990 items in debt.
    assert post(api, secret, BATCH_PATH, items(1000)).status_code == 202
    from_redis = post(api, secret, BATCH_PATH, items(1000))
    assert from_redis.status_code == 429
    queued, calls = real_redis.xlen(keys.STREAM), evalsha_calls(real_redis)

    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(head(secret, promised, path))  # the body is never sent
        status_line, headers = read_answer_head(sock)
    assert status_line == "HTTP/1.1 429 Too Many Requests"
    assert RATE_HEADERS <= headers.keys() and RATE_HEADERS <= {name.lower() for name in from_redis.headers}
    assert headers["ratelimit-remaining"] == "0" and headers["ratelimit-limit"] == "10"
    assert 900 < int(headers["retry-after"]) <= 990 and 900 < int(headers["ratelimit-reset"]) <= 1000
    # Answered by the API alone: no script call, nothing queued.
    assert (real_redis.xlen(keys.STREAM), evalsha_calls(real_redis)) == (queued, calls)


def test_a_fresh_token_is_not_refused_for_another_tokens_spent_bucket(
    processes: Processes, real_redis: redis.Redis
) -> None:
    secret = ingest_token(real_redis)
    other, token = create_token(real_redis, "other tenant")
    site_id = real_redis.hget(keys.SITE_BY_DOMAIN, "example.com").decode()
    grant(real_redis, token.id, site_id, "owner")
    api = processes.api(HITSTREAM_RATE_LIMIT="1", HITSTREAM_RATE_BURST="10")
    assert post(api, secret, BATCH_PATH, items(1000)).status_code == 202
    assert post(api, secret, BATCH_PATH, items(2)).status_code == 429
    assert post(api, secret, PAGEVIEW_PATH, items(1)[0]).status_code == 429
    assert [post(api, other, PAGEVIEW_PATH, item).status_code for item in items(10)] == [202] * 10


def test_a_batch_larger_than_its_bucket_can_hold_is_refused_before_its_items_are_checked(
    processes: Processes, real_redis: redis.Redis
) -> None:
    secret = ingest_token(real_redis)
    api = processes.api(HITSTREAM_RATE_LIMIT="0.01", HITSTREAM_RATE_BURST="100")
    assert post(api, secret, BATCH_PATH, items(95)).status_code == 202  # 5 items left
    assert post(api, secret, BATCH_PATH, items(50)).status_code == 429  # Redis: holds 5
    assert post(api, secret, PAGEVIEW_PATH, items(1)[0]).status_code == 202  # affordable: 4 left
    calls = evalsha_calls(real_redis)
    for count in (50, 10, 7):  # more than the 6 the bucket can hold at most
        refused = post(api, secret, BATCH_PATH, items(count))
        assert refused.status_code == 429 and RATE_HEADERS <= {name.lower() for name in refused.headers}
    assert evalsha_calls(real_redis) == calls  # answered without Redis
    assert post(api, secret, BATCH_PATH, items(3)).status_code == 202  # affordable: decided by Redis
    assert real_redis.xlen(keys.STREAM) == 95 + 1 + 3


@pytest.mark.parametrize("form", ["json", "ndjson"])
def test_idempotency_key_replays_are_charged_like_any_request(
    processes: Processes, real_redis: redis.Redis, form: str
) -> None:
    secret = ingest_token(real_redis)
    api = processes.api(HITSTREAM_RATE_LIMIT="0.001", HITSTREAM_RATE_BURST="7")
    batch = items(3)
    body = orjson.dumps(batch) if form == "json" else b"\n".join(map(orjson.dumps, batch))
    content_type = "application/json" if form == "json" else "application/x-ndjson"

    def send() -> httpx.Response:
        return httpx.post(
            api.url + BATCH_PATH,
            content=body,
            timeout=30,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": content_type, "Idempotency-Key": "chunk-1"},
        )

    answers = [send() for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert answers[0].json() == answers[1].json() == {"accepted": 3, "rejected": []}
    assert [answer.headers["RateLimit-Remaining"] for answer in answers] == ["4", "1", "1"]
    assert real_redis.xlen(keys.STREAM) == 3  # the replay was answered, not queued again


def refused_whole(real_redis: redis.Redis) -> list[tuple[str, Any, dict[str, str], int]]:
    """Requests refused whole: path, body, extra headers, status."""
    add_site(real_redis, "no-grant.example")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    return [
        (BATCH_PATH, items(3, "no-grant.example"), key, 400),  # no grant on the site: 403 each
        (BATCH_PATH, items(3, "unknown.example"), key, 400),  # no such site: 404 each
        (BATCH_PATH, items(3, visitor_ip="not an ip"), key, 400),  # invalid: 400 each
        (BATCH_PATH, items(3), {**key, "Authorization": "Bearer wrong"}, 401),
        (PAGEVIEW_PATH, items(1, "no-grant.example")[0], {}, 403),
        (EVENT_PATH, {**items(1, "no-grant.example")[0], "name": "signup"}, {}, 403),
        (PAGEVIEW_PATH, items(1, "unknown.example")[0], {}, 404),
    ]


@pytest.mark.parametrize(
    "case",
    range(7),
    ids=[
        "batch-no-grant",
        "batch-unknown-site",
        "batch-all-invalid",
        "batch-bad-token",
        "pageview-no-grant",
        "event-no-grant",
        "pageview-unknown-site",
    ],
)
def test_a_request_refused_whole_leaves_no_retry_key_and_no_stored_answer(
    processes: Processes, real_redis: redis.Redis, case: int
) -> None:
    secret = ingest_token(real_redis)
    api = processes.api()
    path, body, headers, status = refused_whole(real_redis)[case]
    for _ in range(2):  # a retry is refused the same way: nothing remembered in between
        assert post(api, secret, path, body, **headers).status_code == status
    left = {key.decode() for key in real_redis.keys(f"{keys.PREFIX}:*")}
    assert not {key for key in left if key.startswith((f"{keys.PREFIX}:seen:", f"{keys.PREFIX}:idem:"))}
    assert real_redis.xlen(keys.STREAM) == 0
