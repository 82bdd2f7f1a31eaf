"""``POST /api/ingest/server/pageviews`` in-process against the suite's real Redis: mixed
items, both body forms, the limits, the rate limit in items, Idempotency-Key, all or nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ingest_api.batch import MAX_BATCH_BYTES, MAX_BATCH_ITEMS
from shared.control.sites import add_site
from tests.endpoint import BODY, World, assert_error, client_for

PATH = "/api/ingest/server/pageviews"


def page(number: int, **changes: Any) -> dict[str, Any]:
    return {**BODY, "url": f"https://example.com/page/{number}", **changes}


def post_batch(client: TestClient, secret: str | None, items: Any, **headers: str) -> Any:
    if secret is not None:
        headers.setdefault("Authorization", f"Bearer {secret}")
    content = items if isinstance(items, bytes) else orjson.dumps(items)
    headers.setdefault("Content-Type", "application/json")
    return client.post(PATH, content=content, headers=headers)


def queued_urls(world: World) -> list[str]:
    return [envelope.url for envelope in world.queued()]


MIXED = [
    page(0),
    page(1, url="example.com/no-scheme"),
    page(2, url="https://unknown.example/"),
    page(3, url="https://other.example/"),  # a site the token has no grant on
    page(4, dnt=True),
    "not an object",
    page(6, visitor_ip="10.0.0.300"),
    page(7, user_agent="  "),
    page(8),
]
MIXED_REJECTED = [
    {"index": 1, "status": 400, "message": "url must be an absolute http or https URL"},
    {"index": 2, "status": 404, "message": "Site not found"},
    {"index": 3, "status": 403, "message": "Access denied"},
    {"index": 5, "status": 400, "message": "Bad request body"},
    {"index": 6, "status": 400, "message": "visitor_ip must be a valid IP address"},
    {"index": 7, "status": 400, "message": "user_agent is required"},
]


def test_mixed_batch_answers_each_rejected_item_and_queues_the_valid_ones(api: TestClient, world: World) -> None:
    add_site(world.redis, "other.example")
    response = post_batch(api, world.secret, MIXED)
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "rejected": MIXED_REJECTED}
    assert response.headers["RateLimit-Remaining"] == str(200 - len(MIXED))
    # Valid items are queued in order; the dnt item is accepted but not queued.
    assert queued_urls(world) == [
        "https://example.com/page/0",
        "https://example.com/page/8",
    ]
    assert {envelope.site_id for envelope in world.queued()} == {world.site.id}


def test_ndjson_gives_the_same_answer_as_the_array_and_an_unreadable_line_is_its_item(
    api: TestClient, world: World
) -> None:
    add_site(world.redis, "other.example")
    lines = [orjson.dumps(item) for item in MIXED]
    lines[5] = b'{"url": "https://example.com/", '  # not JSON: that line's item only
    ndjson = b"\r\n".join(lines) + b"\n"
    response = post_batch(
        api,
        world.secret,
        ndjson,
        **{"Content-Type": "application/x-ndjson; charset=utf-8"},
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "rejected": MIXED_REJECTED}
    assert queued_urls(world) == [
        "https://example.com/page/0",
        "https://example.com/page/8",
    ]


def test_batch_where_every_item_fails_answers_400_with_the_same_body(api: TestClient, world: World) -> None:
    response = post_batch(
        api,
        world.secret,
        [page(0, url="ftp://example.com/"), page(1, timestamp="yesterday")],
    )
    assert response.status_code == 400
    assert response.json() == {
        "accepted": 0,
        "rejected": [
            {
                "index": 0,
                "status": 400,
                "message": "url must be an absolute http or https URL",
            },
            {"index": 1, "status": 400, "message": "timestamp must be RFC3339"},
        ],
    }
    assert world.queued() == []


def test_1000_items_are_one_batch_even_above_the_burst_and_1001_are_refused(api: TestClient, world: World) -> None:
    response = post_batch(api, world.secret, [page(n) for n in range(MAX_BATCH_ITEMS)])
    assert response.status_code == 202
    assert response.json() == {"accepted": MAX_BATCH_ITEMS, "rejected": []}
    assert len(world.queued()) == MAX_BATCH_ITEMS
    # The bucket (burst 200) is now 800 items in debt: the next request waits for the refill.
    refused = post_batch(api, world.secret, [page(0)])
    assert_error(refused, 429, "Too Many Requests")
    assert int(refused.headers["Retry-After"]) >= 8


def test_more_than_1000_items_is_refused_naming_the_limit(redis_url: str, world: World) -> None:
    with client_for(redis_url, rate_burst=5000) as api:
        response = post_batch(api, world.secret, [page(n) for n in range(MAX_BATCH_ITEMS + 1)])
    assert_error(response, 400, "batch must hold at most 1000 items")
    assert world.queued() == []


def test_body_of_1_mib_is_read_and_one_byte_more_is_refused_naming_the_limit(redis_url: str, world: World) -> None:
    item = orjson.dumps(page(0, referrer="r" * 2000))
    count = MAX_BATCH_BYTES // (len(item) + 1)
    body = b"[" + b",".join([item] * count) + b"]"
    padded = body[:-1] + b" " * (MAX_BATCH_BYTES - len(body)) + b"]"
    assert len(padded) == MAX_BATCH_BYTES
    with client_for(redis_url, rate_burst=5000) as api:
        assert post_batch(api, world.secret, padded).json() == {
            "accepted": count,
            "rejected": [],
        }
        too_large = post_batch(api, world.secret, padded + b" ")
    assert_error(too_large, 400, f"batch body must be at most {MAX_BATCH_BYTES} bytes")
    assert len(world.queued()) == count


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"[]", "application/json", "batch must hold at least one item"),
        (b"", "application/x-ndjson", "batch must hold at least one item"),
        (
            orjson.dumps(BODY),
            "application/json",
            "batch must be a JSON array, or NDJSON with Content-Type: application/x-ndjson",
        ),
        (
            orjson.dumps(BODY) + b"\n" + orjson.dumps(BODY),
            "application/json",
            "batch must be a JSON array, or NDJSON with Content-Type: application/x-ndjson",
        ),
    ],
)
def test_whole_request_errors_name_the_problem(
    api: TestClient, world: World, body: bytes, content_type: str, message: str
) -> None:
    assert_error(
        post_batch(api, world.secret, body, **{"Content-Type": content_type}),
        400,
        message,
    )
    assert world.queued() == []


def test_missing_token_answers_401(api: TestClient, world: World) -> None:
    assert_error(post_batch(api, None, [page(0)]), 401, "Unauthorized")
    assert_error(post_batch(api, "hk_unknown", [page(0)]), 401, "Unauthorized")


def test_rate_limit_counts_items_and_a_refused_batch_queues_nothing(redis_url: str, world: World) -> None:
    with client_for(redis_url, rate_limit=0.001, rate_burst=10) as api:
        first = post_batch(api, world.secret, [page(n) for n in range(4)] + [page(4, url="nope")])
        assert first.status_code == 202 and first.headers["RateLimit-Remaining"] == "5"
        assert_error(
            post_batch(api, world.secret, [page(n) for n in range(6)]),
            429,
            "Too Many Requests",
        )
        assert post_batch(api, world.secret, [page(n) for n in range(5)]).status_code == 202
    assert len(world.queued()) == 9


def test_queue_full_refuses_the_whole_batch(redis_url: str, world: World) -> None:
    with client_for(redis_url, queue_max_depth=3, token_queue_share=1.0) as api:
        assert post_batch(api, world.secret, [page(0), page(1)]).status_code == 202
        refused = post_batch(api, world.secret, [page(2), page(3)])
    assert_error(refused, 503, "Service not available")
    assert queued_urls(world) == [
        "https://example.com/page/0",
        "https://example.com/page/1",
    ]


def test_idempotency_key_repeat_gets_the_first_answer_and_queues_nothing(api: TestClient, world: World) -> None:
    items = [page(0), page(1, url="nope")]
    first = post_batch(api, world.secret, items, **{"Idempotency-Key": "replay-chunk-7"})
    # Same key, same body: the stored answer, nothing queued (another body: 422,
    # tests/test_api_idempotency.py).
    repeat = post_batch(api, world.secret, items, **{"Idempotency-Key": "replay-chunk-7"})
    other_key = post_batch(api, world.secret, items, **{"Idempotency-Key": "replay-chunk-8"})
    assert first.status_code == repeat.status_code == other_key.status_code == 202
    assert (
        repeat.json()
        == first.json()
        == {
            "accepted": 1,
            "rejected": [
                {
                    "index": 1,
                    "status": 400,
                    "message": "url must be an absolute http or https URL",
                }
            ],
        }
    )
    assert queued_urls(world) == [
        "https://example.com/page/0",
        "https://example.com/page/0",
    ]
    answer_keys = world.redis.keys("hitstream:idem:*")
    assert len(answer_keys) == 2 and not any(b"replay-chunk" in key for key in answer_keys)
    assert all(86_000 < world.redis.ttl(key) <= 86_400 for key in answer_keys)


def test_idempotency_key_of_a_refused_batch_is_not_remembered(redis_url: str, world: World) -> None:
    key = {"Idempotency-Key": "k1"}
    with client_for(redis_url, queue_max_depth=1, token_queue_share=1.0) as api:
        assert post_batch(api, world.secret, [page(0), page(1)], **key).status_code == 503
    with client_for(redis_url) as api:
        retried = post_batch(api, world.secret, [page(0), page(1)], **key)
    assert retried.json() == {"accepted": 2, "rejected": []}
    assert len(world.queued()) == 2


def repeated_url_item(number: int) -> bytes:
    """An item naming its url three times, in two cases: the last one (/c) must win."""
    rest = orjson.dumps({name: value for name, value in BODY.items() if name != "url"})
    urls = b", ".join(
        b'"%s": "https://example.com/%d/%s"' % (key, number, last)
        for key, last in ((b"url", b"a"), (b"URL", b"b"), (b"url", b"c"))
    )
    return b"{" + urls + b", " + rest[1:]


@pytest.mark.parametrize("form", ["array", "ndjson"])
def test_batch_items_match_keys_in_any_case_and_the_last_repeat_wins(api: TestClient, world: World, form: str) -> None:
    shouted = orjson.dumps({name.upper(): value for name, value in page(0).items()})
    mixed = orjson.dumps(
        {
            "Url": "https://example.com/page/1",
            **{k: v for k, v in BODY.items() if k != "url"},
            "VISITOR_IP": "not an address",
        }
    )
    items = [shouted, repeated_url_item(1), mixed, repeated_url_item(3), orjson.dumps(page(4))]
    if form == "array":
        body, content_type = b"[" + b",".join(items) + b"]", "application/json"
    else:
        body, content_type = b"\n".join(items), "application/x-ndjson"
    response = post_batch(api, world.secret, body, **{"Content-Type": content_type})
    assert response.json() == {
        "accepted": 4,
        "rejected": [{"index": 2, "status": 400, "message": "visitor_ip must be a valid IP address"}],
    }
    assert queued_urls(world) == [
        "https://example.com/page/0",
        "https://example.com/1/c",
        "https://example.com/3/c",
        "https://example.com/page/4",
    ]
