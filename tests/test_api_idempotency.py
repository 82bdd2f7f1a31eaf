"""Client retries (in-process, the suite's real Redis): what makes two requests the same item
(a pageview's page_id; an event's event_id, else its page_id and name; per site), answered
202 and queued once within the window, and never marked as seen by a refused request."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient

from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site
from tests.endpoint import BODY, World, client_for, post

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
    with client_for(redis_url, idempotency_window_seconds=1) as api:
        assert post(api, world.secret, RETRIED).status_code == 202
        time.sleep(1.1)
        assert post(api, world.secret, RETRIED).status_code == 202
    assert [envelope.page_id for envelope in world.queued()] == [PAGE_ID, PAGE_ID]
