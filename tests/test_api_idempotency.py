"""Client retries with the same page_id (in-process, the suite's real Redis): answered 202,
queued once within the window, and never marked as seen by a request that was refused."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from shared import keys
from tests.test_api_endpoint import BODY, World, api, client_for, post, world  # noqa: F401

PAGE_ID = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"
RETRIED = {**BODY, "page_id": PAGE_ID}


def test_a_retried_page_id_is_answered_202_and_queued_once(
    api: TestClient, world: World
) -> None:
    assert [post(api, world.secret, RETRIED).status_code for _ in range(3)] == [
        202,
        202,
        202,
    ]
    assert [envelope.page_id for envelope in world.queued()] == [PAGE_ID]
    seen_key = f"hitstream:seen:pageview:{world.site.id}:{PAGE_ID}"
    assert 86_000 < world.redis.ttl(seen_key) <= 86_400


def test_generated_page_ids_need_no_seen_key(api: TestClient, world: World) -> None:
    assert (
        post(api, world.secret).status_code
        == post(api, world.secret).status_code
        == 202
    )
    assert len(world.queued()) == 2
    assert world.redis.keys("hitstream:seen:*") == []


def test_an_event_may_carry_the_page_id_of_its_pageview(
    api: TestClient, world: World
) -> None:
    headers = {"Authorization": f"Bearer {world.secret}"}
    assert post(api, world.secret, RETRIED).status_code == 202
    for _ in range(2):
        event = api.post(
            "/api/ingest/server/event",
            json={**RETRIED, "name": "signup"},
            headers=headers,
        )
        assert event.status_code == 202
    assert [envelope.kind for envelope in world.queued()] == ["pageview", "event"]


def test_a_page_id_twice_in_one_batch_is_queued_once(
    api: TestClient, world: World
) -> None:
    batch = api.post(
        "/api/ingest/server/pageviews",
        json=[RETRIED, RETRIED, BODY],
        headers={"Authorization": f"Bearer {world.secret}"},
    )
    assert batch.json() == {"accepted": 3, "rejected": []}
    assert post(api, world.secret, RETRIED).status_code == 202
    assert [envelope.page_id == PAGE_ID for envelope in world.queued()] == [True, False]


def test_rate_limited_and_queue_full_requests_do_not_mark_the_id_as_seen(
    redis_url: str, world: World
) -> None:
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


def test_after_the_window_the_same_page_id_is_queued_again(
    redis_url: str, world: World
) -> None:
    with client_for(redis_url, idempotency_window_seconds=1) as api:
        assert post(api, world.secret, RETRIED).status_code == 202
        time.sleep(1.1)
        assert post(api, world.secret, RETRIED).status_code == 202
    assert [envelope.page_id for envelope in world.queued()] == [PAGE_ID, PAGE_ID]
