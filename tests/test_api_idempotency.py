"""Client retries (in-process, the suite's real Redis): what makes two requests the same item
(a pageview's page_id; an event's event_id, else its page_id and name; per site), answered
202 and queued once within the window, and never marked as seen by a refused request; and a
batch's Idempotency-Key, which answers only the request it was first used for (another body:
422, nothing queued)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from ingest_api.app import create_app
from ingest_api.openapi import BATCH_PATH
from shared import keys
from shared.config import Settings
from shared.control.grants import grant
from shared.control.sites import add_site
from tests.endpoint import BODY, World, assert_error, client_for, post
from tests.procs import wait_until
from tests.test_api_batch import page, post_batch, queued_urls
from tests.test_api_endpoint import evalsha_calls

PAGE_ID = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"
RETRIED = {**BODY, "page_id": PAGE_ID}


def test_a_retried_page_id_is_answered_202_and_queued_once(api: TestClient, world: World) -> None:
    assert [post(api, world.secret, RETRIED).status_code for _ in range(3)] == [
        202,
        202,
        202,
    ]
    assert [envelope.page_id for envelope in world.queued()] == [PAGE_ID]
    seen_key = f"hitstream:seen:pageview:{world.site.id}:{PAGE_ID}"
    assert 86_000 < world.redis.ttl(seen_key) <= 86_400


def test_generated_page_ids_need_no_seen_key(api: TestClient, world: World) -> None:
    assert post(api, world.secret).status_code == post(api, world.secret).status_code == 202
    assert len(world.queued()) == 2
    assert world.redis.keys("hitstream:seen:*") == []


def post_event(api: TestClient, world: World, body: dict[str, Any]) -> int:
    headers = {"Authorization": f"Bearer {world.secret}"}
    return api.post("/api/ingest/server/event", json=body, headers=headers).status_code


def queued_items(world: World) -> list[tuple[str, str | None, str]]:
    return [(envelope.kind, envelope.event_name, envelope.page_id) for envelope in world.queued()]


def test_a_pageview_and_the_events_sharing_its_page_id_are_each_queued_once(api: TestClient, world: World) -> None:
    for _ in range(3):  # the first round, then two retries of every request
        assert post(api, world.secret, RETRIED).status_code == 202
        for name in ("add_to_cart", "checkout", "purchase"):
            assert post_event(api, world, {**RETRIED, "name": name}) == 202
    assert queued_items(world) == [
        ("pageview", None, PAGE_ID),
        ("event", "add_to_cart", PAGE_ID),
        ("event", "checkout", PAGE_ID),
        ("event", "purchase", PAGE_ID),
    ]
    assert len(world.redis.keys("hitstream:seen:*")) == 4


def test_an_event_name_is_compared_trimmed_and_case_sensitive(api: TestClient, world: World) -> None:
    for name in ("signup", " signup ", "signup\t", "Signup", "SIGNUP", "Signup"):
        assert post_event(api, world, {**RETRIED, "name": name}) == 202
    assert [name for _, name, _ in queued_items(world)] == ["signup", "Signup", "SIGNUP"]


def test_event_ids_tell_apart_events_of_one_name_on_one_page(api: TestClient, world: World) -> None:
    first, second = "0b5f3a2c-1d4e-4f6a-8b7c-9d0e1f2a3b4c", "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    for event_id in (first, second, first, second.upper()):
        assert post_event(api, world, {**RETRIED, "name": "add_to_cart", "event_id": event_id}) == 202
    # The event_id alone identifies the event: another name or page under it is a retry.
    assert post_event(api, world, {**BODY, "name": "checkout", "event_id": first}) == 202
    # Without event_id the page_id and name decide, whatever was sent with an event_id.
    assert post_event(api, world, {**RETRIED, "name": "add_to_cart"}) == 202
    assert post_event(api, world, {**RETRIED, "name": "add_to_cart"}) == 202
    assert queued_items(world) == [("event", "add_to_cart", PAGE_ID)] * 3


def test_items_without_a_client_chosen_id_are_all_queued(api: TestClient, world: World) -> None:
    for _ in range(2):
        assert post(api, world.secret).status_code == 202
        assert post_event(api, world, {**BODY, "name": "signup"}) == 202
    assert [kind for kind, _, _ in queued_items(world)] == ["pageview", "event"] * 2
    assert world.redis.keys("hitstream:seen:*") == []


def test_the_same_ids_on_another_site_are_other_items(api: TestClient, world: World) -> None:
    other = add_site(world.redis, "example.org")
    grant(world.redis, world.token.id, other.id, "owner")
    elsewhere = {**RETRIED, "url": "https://example.org/pricing"}
    event_id = "0b5f3a2c-1d4e-4f6a-8b7c-9d0e1f2a3b4c"
    for body in (RETRIED, elsewhere):
        assert post(api, world.secret, body).status_code == 202
        assert post_event(api, world, {**body, "name": "signup"}) == 202
        assert post_event(api, world, {**body, "name": "click", "event_id": event_id}) == 202
    assert [envelope.site_id for envelope in world.queued()] == [world.site.id] * 3 + [other.id] * 3


def test_a_retry_whose_keys_differ_in_case_is_still_a_retry(api: TestClient, world: World) -> None:
    assert post(api, world.secret, RETRIED).status_code == 202
    shouted = {name.upper(): value for name, value in RETRIED.items()}
    assert post(api, world.secret, {**shouted, "PAGE_ID": PAGE_ID.upper()}).status_code == 202
    assert post_event(api, world, {**RETRIED, "name": "signup"}) == 202
    assert post_event(api, world, {**shouted, "Name": "signup"}) == 202
    assert queued_items(world) == [("pageview", None, PAGE_ID), ("event", "signup", PAGE_ID)]


def test_a_page_id_twice_in_one_batch_is_queued_once(api: TestClient, world: World) -> None:
    batch = api.post(
        "/api/ingest/server/pageviews",
        json=[RETRIED, RETRIED, BODY],
        headers={"Authorization": f"Bearer {world.secret}"},
    )
    assert batch.json() == {"accepted": 3, "rejected": []}
    assert post(api, world.secret, RETRIED).status_code == 202
    assert [envelope.page_id == PAGE_ID for envelope in world.queued()] == [True, False]


def test_rate_limited_and_queue_full_requests_do_not_mark_the_id_as_seen(redis_url: str, world: World) -> None:
    with client_for(redis_url, rate_limit=0.001, rate_burst=1) as api:
        assert post(api, world.secret).status_code == 202
        assert post(api, world.secret, RETRIED).status_code == 429
    # The spent bucket refills at the next client's rate from almost nothing: a fast next
    # request would get 429 again. Budgets are not what this test is about.
    world.redis.delete(keys.RATE_BUCKET.format(subject=f"token:{world.token.id}"))
    with client_for(redis_url, queue_max_depth=1, token_queue_share=1.0) as api:
        assert post(api, world.secret, RETRIED).status_code == 503
    with client_for(redis_url) as api:
        assert post(api, world.secret, RETRIED).status_code == 202
    assert [envelope.page_id == PAGE_ID for envelope in world.queued()] == [False, True]


def test_after_the_window_the_same_page_id_is_queued_again(redis_url: str, world: World) -> None:
    seen_key = f"hitstream:seen:pageview:{world.site.id}:{PAGE_ID}"
    with client_for(redis_url, idempotency_window_seconds=1) as api:
        assert post(api, world.secret, RETRIED).status_code == 202
        assert world.redis.exists(seen_key) == 1
        wait_until(lambda: not world.redis.exists(seen_key), 10, "the page_id's seen key to expire")
        assert post(api, world.secret, RETRIED).status_code == 202
    assert [envelope.page_id for envelope in world.queued()] == [PAGE_ID, PAGE_ID]


# --- Idempotency-Key: one request per key ------------------------------------------------

KEY = {"Idempotency-Key": "replay-chunk-7"}
FIRST = [page(0), page(1), page(2)]
OTHER = [page(3), page(4), page(5), page(6), page(7)]
FIRST_URLS = [f"https://example.com/page/{number}" for number in range(3)]
OTHER_URLS = [f"https://example.com/page/{number}" for number in range(3, 8)]


def answer_key(world: World) -> str:
    key_hash = hashlib.sha256(KEY["Idempotency-Key"].encode()).hexdigest()
    return keys.BATCH_ANSWER.format(token_id=world.token.id, key_hash=key_hash)


def test_a_reused_idempotency_key_with_another_body_is_refused_with_422_and_nothing_of_it_is_queued(
    redis_url: str, world: World
) -> None:
    with client_for(redis_url, rate_limit=0.001, rate_burst=200) as api:  # no refill between requests
        first = post_batch(api, world.secret, FIRST, **KEY)
        reused = post_batch(api, world.secret, OTHER, **KEY)
        # The refusal left the first answer in place: the first body still gets it back.
        again = post_batch(api, world.secret, FIRST, **KEY)
    assert (first.status_code, first.json()) == (202, {"accepted": 3, "rejected": []})
    assert_error(reused, 422, "Idempotency-Key was already used with a different request body")
    assert reused.headers["RateLimit-Remaining"] == str(200 - 3 - 5)  # charged like any request
    assert (again.status_code, again.content) == (202, first.content)
    assert queued_urls(world) == FIRST_URLS


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_the_same_body_under_the_same_key_gets_the_first_answer_and_is_queued_once(
    api: TestClient, world: World, content_type: str
) -> None:
    items = [*FIRST, page(3, url="nope")]
    body = orjson.dumps(items) if content_type == "application/json" else b"\n".join(map(orjson.dumps, items))
    answers = [post_batch(api, world.secret, body, **KEY, **{"Content-Type": content_type}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert answers[0].json() == {
        "accepted": 3,
        "rejected": [{"index": 3, "status": 400, "message": "url must be an absolute http or https URL"}],
    }
    assert answers[1].content == answers[2].content == answers[0].content
    assert queued_urls(world) == FIRST_URLS


def one_field_changed() -> bytes:
    return orjson.dumps([*FIRST[:2], {**FIRST[2], "timestamp": "2026-04-15T12:00:01Z"}])


def keys_reordered() -> bytes:
    return orjson.dumps([dict(reversed(item.items())) for item in FIRST])


def spaced_out() -> bytes:
    return orjson.dumps(FIRST, option=orjson.OPT_INDENT_2)


@pytest.mark.parametrize("other_body", [one_field_changed, keys_reordered, spaced_out])
def test_a_body_differing_in_any_byte_under_the_same_key_is_refused_with_422(
    api: TestClient, world: World, other_body: Callable[[], bytes]
) -> None:
    """The raw bytes are compared, not the items they decode to (ingest_api.idempotency_key)."""
    assert post_batch(api, world.secret, FIRST, **KEY).status_code == 202
    assert_error(
        post_batch(api, world.secret, other_body(), **KEY),
        422,
        "Idempotency-Key was already used with a different request body",
    )
    first_timestamp = world.queued()[0].timestamp_ms
    assert [(envelope.url, envelope.timestamp_ms) for envelope in world.queued()] == [
        (url, first_timestamp) for url in FIRST_URLS
    ]


def test_the_same_bytes_in_the_other_form_under_the_same_key_are_another_request(api: TestClient, world: World) -> None:
    # Read as NDJSON these lines are five items, one of them valid: another request.
    lines = b"[\n" + b",\n".join(map(orjson.dumps, FIRST)) + b"\n]"
    assert post_batch(api, world.secret, lines, **KEY).json() == {"accepted": 3, "rejected": []}
    as_ndjson = post_batch(api, world.secret, lines, **KEY, **{"Content-Type": "application/x-ndjson"})
    assert_error(as_ndjson, 422, "Idempotency-Key was already used with a different request body")
    assert queued_urls(world) == FIRST_URLS


def test_another_body_under_a_key_of_its_own_is_accepted_and_queued(api: TestClient, world: World) -> None:
    assert post_batch(api, world.secret, FIRST, **KEY).status_code == 202
    assert post_batch(api, world.secret, OTHER, **KEY).status_code == 422
    own_key = post_batch(api, world.secret, OTHER, **{"Idempotency-Key": "replay-chunk-8"})
    assert (own_key.status_code, own_key.json()) == (202, {"accepted": 5, "rejected": []})
    assert queued_urls(world) == FIRST_URLS + OTHER_URLS


def test_two_bodies_under_one_key_decided_in_one_script_call_queue_only_the_accepted_one(
    redis_url: str, world: World
) -> None:
    async def scenario() -> list[httpx.Response]:
        settings = Settings(redis_url=redis_url, redis_timeout_ms=2000, control_cache_seconds=60)
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            headers = {"Authorization": f"Bearer {world.secret}", **KEY}
            await client.post(BATCH_PATH, json=[page(8)], headers=headers | {"Idempotency-Key": "warm-up"})
            calls_before = evalsha_calls(world.redis)
            responses = await asyncio.gather(
                *(client.post(BATCH_PATH, json=body, headers=headers) for body in (FIRST, OTHER))
            )
            assert evalsha_calls(world.redis) - calls_before == 1
            return list(responses)

    first, other = asyncio.run(scenario())
    assert sorted([first.status_code, other.status_code]) == [202, 422]
    accepted_urls = FIRST_URLS if first.status_code == 202 else OTHER_URLS
    assert queued_urls(world) == ["https://example.com/page/8", *accepted_urls]


def test_after_the_window_a_key_may_be_used_for_another_body(redis_url: str, world: World) -> None:
    with client_for(redis_url, idempotency_window_seconds=1) as api:
        assert post_batch(api, world.secret, FIRST, **KEY).status_code == 202
        assert world.redis.exists(answer_key(world)) == 1
        wait_until(lambda: not world.redis.exists(answer_key(world)), 10, "the key's answer to expire")
        reused = post_batch(api, world.secret, OTHER, **KEY)
    assert (reused.status_code, reused.json()) == (202, {"accepted": 5, "rejected": []})
    assert queued_urls(world) == FIRST_URLS + OTHER_URLS


def test_an_answer_stored_before_fingerprints_is_still_replayed_for_its_window(api: TestClient, world: World) -> None:
    # What an API process of the previous release stored: the answer alone, no fingerprint.
    earlier = b'{"accepted":3,"rejected":[]}'
    world.redis.set(answer_key(world), earlier, ex=60)
    retried = post_batch(api, world.secret, FIRST, **KEY)
    assert (retried.status_code, retried.content) == (202, earlier)
    assert queued_urls(world) == []
