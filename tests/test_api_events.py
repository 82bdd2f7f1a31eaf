"""``POST /api/ingest/server/event``: the pageview's checks plus name and properties, each
refusal naming its field, and what reaches the queue (in-process, the suite's real Redis)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ingest_api.errors import BadRequest
from ingest_api.events import parse_event
from tests.test_api_endpoint import BODY, World, api, assert_error, world  # noqa: F401

PATH = "/api/ingest/server/event"
EVENT = {
    **BODY,
    "name": "  signup  ",
    "properties": {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": False},
}
NOW_MS = 1_776_254_400_000


def post_event(client: TestClient, secret: str | None, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.post(PATH, json=body, headers=headers)


def test_event_answers_202_and_is_queued_as_an_event_with_trimmed_name(
    api: TestClient, world: World
) -> None:
    response = post_event(api, world.secret, EVENT)
    assert response.status_code == 202 and response.content == b""
    [envelope] = world.queued()
    assert envelope.kind == "event"
    assert envelope.event_name == "signup"
    assert envelope.event_properties == {
        "plan": "pro",
        "seats": 3,
        "ratio": 0.5,
        "trial": False,
    }
    assert (envelope.site_id, envelope.url, envelope.visitor_ip) == (
        world.site.id,
        BODY["url"],
        BODY["visitor_ip"],
    )


def test_event_without_properties_has_none(api: TestClient, world: World) -> None:
    assert (
        post_event(
            api, world.secret, {**BODY, "name": "click", "properties": None}
        ).status_code
        == 202
    )
    assert world.queued()[0].event_properties == {}


def test_event_gets_the_pageview_refusals(api: TestClient, world: World) -> None:
    assert_error(post_event(api, None, EVENT), 401, "Unauthorized")
    assert_error(
        post_event(api, world.secret, {**EVENT, "url": "https://nope.example/"}),
        404,
        "Site not found",
    )
    assert_error(
        post_event(api, world.secret, {**EVENT, "visitor_ip": "x"}),
        400,
        "visitor_ip must be a valid IP address",
    )
    assert post_event(api, world.secret, {**EVENT, "dnt": True}).status_code == 202
    assert world.queued() == []


def refusal(**changes: Any) -> str:
    body = {**EVENT, **changes}
    with pytest.raises(BadRequest) as raised:
        parse_event(orjson.dumps(body), NOW_MS)
    return raised.value.message


FLAT = "properties must be a flat object of strings, numbers or booleans"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": None}, "name is required"),
        ({"name": "   "}, "name is required"),
        ({"name": 7}, "Bad request body: name must be a string"),
        ({"name": "n" * 201}, "name must be at most 200 characters"),
        ({"properties": []}, FLAT),
        ({"properties": "plan=pro"}, FLAT),
        ({"properties": {"nested": {"a": 1}}}, FLAT),
        ({"properties": {"list": [1]}}, FLAT),
        ({"properties": {"none": None}}, FLAT),
        (
            {"properties": {f"k{n}": n for n in range(51)}},
            "properties must have at most 50 keys",
        ),
        (
            {"properties": {"k" * 129: 1}},
            "property keys must be at most 128 characters",
        ),
        (
            {"properties": {"k": "v" * 1025}},
            "property values must be at most 1024 characters",
        ),
        # The pageview's checks come first.
        ({"url": "nope", "name": None}, "url must be an absolute http or https URL"),
    ],
)
def test_bad_names_and_properties_are_refused_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    assert refusal(**changes) == message


def test_limits_themselves_are_accepted() -> None:
    properties = {
        ("k" * 127) + str(n % 10) if n < 10 else f"key{n}": "v" * 1024
        for n in range(50)
    }
    event = parse_event(
        orjson.dumps({**EVENT, "name": "n" * 200, "properties": properties}), NOW_MS
    )
    assert event.event_name == "n" * 200 and len(event.event_properties) == 50


def test_openapi_documents_the_event_and_batch_routes(api: TestClient) -> None:
    paths = api.get("/api/openapi.json").json()["paths"]
    assert set(paths[PATH]["post"]["responses"]) == {
        "202",
        "400",
        "401",
        "403",
        "404",
        "429",
        "431",
        "503",
    }
    batch = paths["/api/ingest/server/pageviews"]["post"]
    # 403 only for a lane that is not the token's (per-item 403s are inside the 202 or 400).
    assert set(batch["responses"]) == {"202", "400", "401", "403", "429", "431", "503"}
    assert set(batch["requestBody"]["content"]) == {
        "application/json",
        "application/x-ndjson",
    }
    assert [parameter["name"] for parameter in batch["parameters"]] == [
        "X-Hitstream-Lane",
        "Idempotency-Key",
    ]
