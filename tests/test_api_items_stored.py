"""End to end through real ``hitstream api`` and ``hitstream worker`` processes into a chdb
store: a pageview and the events sharing its page_id each land exactly once however often
they are retried, keys in another case land like exact ones, values at the edges of what the
store holds land exactly, and values beyond them are refused at the API (400, nothing
queued, no dead letter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from ingest_api.openapi import BATCH_PATH, EVENT_PATH, PAGEVIEW_PATH
from shared import keys
from tests.procs import Processes, query_store, stored_pages
from tests.test_api_store import drain
from tests.traffic import ingest_token, pageview

FIRST_EVENT_ID = "0b5f3a2c-1d4e-4f6a-8b7c-9d0e1f2a3b4c"
SECOND_EVENT_ID = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def shouted(body: dict[str, Any]) -> dict[str, Any]:
    """The same body with every key in capitals (values unchanged)."""
    return {name.upper(): value for name, value in body.items()}


def test_a_pageview_and_its_events_each_land_once_however_often_they_are_retried(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {ingest_token(real_redis)}"}
    api = processes.api()
    page_id, body = pageview(1)
    page = orjson.loads(body)
    other_page_id, other_body = pageview(2)
    other_page = orjson.loads(other_body)
    sends: list[tuple[str, Any]] = [
        (PAGEVIEW_PATH, page),
        *((EVENT_PATH, {**page, "name": name}) for name in ("add_to_cart", "checkout", "purchase")),
        # Two more add_to_cart on the same page, told apart by their event_ids.
        *(
            (EVENT_PATH, {**page, "name": "add_to_cart", "event_id": event_id})
            for event_id in (FIRST_EVENT_ID, SECOND_EVENT_ID)
        ),
        # Another page and its event, sent with every key in capitals, and in a batch.
        (PAGEVIEW_PATH, shouted(other_page)),
        (EVENT_PATH, shouted({**other_page, "name": "signup"})),
        (BATCH_PATH, [page, other_page]),
    ]
    for _ in range(3):  # the first send, then two retries of every request
        for path, sent in sends:
            response = httpx.post(api.url + path, json=sent, headers=headers, timeout=10)
            assert response.status_code == 202, response.text
        # Retries with exact keys of what was first sent in capitals, and the other way round.
        for path, sent in ((PAGEVIEW_PATH, other_page), (EVENT_PATH, {**shouted(page), "NAME": "checkout"})):
            assert httpx.post(api.url + path, json=sent, headers=headers, timeout=10).status_code == 202

    store = tmp_path / "store"
    drain(real_redis, processes, store)
    pages, drops = stored_pages(store)
    assert (pages, drops) == ({page_id: 1, other_page_id: 1}, {})
    events = query_store(
        store, "SELECT toString(page_id), name, count() FROM events GROUP BY page_id, name ORDER BY page_id, name"
    )
    assert sorted(events) == sorted(
        [
            [page_id, "add_to_cart", 3],
            [page_id, "checkout", 1],
            [page_id, "purchase", 1],
            [other_page_id, "signup", 1],
        ]
    )
    assert real_redis.hlen(keys.DEAD_LETTERS) == 0


# The largest and smallest numbers a property can carry, as the store keeps them (JSON text).
EDGE_PROPERTIES = {
    "largest": (b"1.7976931348623157e308", "1.7976931348623157e+308"),
    "lowest": (b"-1.7976931348623157e308", "-1.7976931348623157e+308"),
    "tiniest": (b"5e-324", "5e-324"),
    "uint64": (b"18446744073709551615", "18446744073709551615"),
    "int64": (b"-9223372036854775808", "-9223372036854775808"),
}


def with_number_property(event: dict[str, Any], number: bytes) -> bytes:
    """The event's body with the property "n" holding the JSON number text ``number`` as sent."""
    return orjson.dumps(event)[:-1] + b', "properties": {"n": ' + number + b"}}"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"timestamp": "1969-12-31T23:59:59.999Z"}, "timestamp must be from 1970-01-01T00:00:00.000Z"),
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp must be from 1970-01-01T00:00:00.000Z"),
        ({"timestamp": "1970-01-01T00:59:59+01:00"}, "timestamp must be from 1970-01-01T00:00:00.000Z"),
        ({"screen_width": 2**32}, "screen_width must be an integer from 0 to 100000"),
        ({"viewport_height": -1}, "viewport_height must be an integer from 0 to 100000"),
    ],
)
def test_values_beyond_what_the_store_holds_are_refused_and_nothing_is_queued(
    processes: Processes, real_redis: redis.Redis, changes: dict[str, Any], message: str
) -> None:
    headers = {"Authorization": f"Bearer {ingest_token(real_redis)}"}
    api = processes.api()
    page = {**orjson.loads(pageview(1)[1]), **changes}
    for path, sent in ((PAGEVIEW_PATH, page), (EVENT_PATH, {**page, "name": "signup"})):
        response = httpx.post(api.url + path, json=sent, headers=headers, timeout=10)
        assert response.status_code == 400
        assert response.json()["message"].startswith(message)
    answer = httpx.post(api.url + BATCH_PATH, json=[page], headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["rejected"][0]["message"].startswith(message)
    assert real_redis.xlen(keys.STREAM) == 0


def test_values_at_the_edges_of_what_the_store_holds_land_exactly_and_beyond_them_are_refused(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {ingest_token(real_redis)}", "Content-Type": "application/json"}
    api = processes.api()
    epoch_id, body = pageview(1)
    epoch_page = {
        **orjson.loads(body),
        "timestamp": "1970-01-01T01:00:00+01:00",
        "screen_width": 0,
        "viewport_width": 100_000,
    }
    assert httpx.post(api.url + PAGEVIEW_PATH, json=epoch_page, headers=headers).status_code == 202
    for name, (number, _) in EDGE_PROPERTIES.items():
        event = {**orjson.loads(pageview(1)[1]), "name": name}
        response = httpx.post(api.url + EVENT_PATH, content=with_number_property(event, number), headers=headers)
        assert response.status_code == 202, response.text
    for number in (b"1e309", b"-1e309", b"1" + b"0" * 400):
        refused = with_number_property({**epoch_page, "name": "measure"}, number)
        response = httpx.post(api.url + EVENT_PATH, content=refused, headers=headers)
        assert response.status_code == 400
        assert response.json() == {
            "message": "property numbers must be from -1.7976931348623157e+308 to 1.7976931348623157e+308"
        }
    assert real_redis.xlen(keys.STREAM) == 1 + len(EDGE_PROPERTIES)

    store = tmp_path / "store"
    drain(real_redis, processes, store)
    assert query_store(
        store,
        "SELECT toString(page_id), toUnixTimestamp64Milli(timestamp), toString(toDate(timestamp)), "
        "screen_width, viewport_width FROM pageviews",
    ) == [[epoch_id, 0, "1970-01-01", 0, 100_000]]
    stored = query_store(store, "SELECT name, properties['n'] FROM events ORDER BY name")
    assert sorted(stored) == sorted([name, text] for name, (_, text) in EDGE_PROPERTIES.items())
    assert real_redis.hlen(keys.DEAD_LETTERS) == 0
