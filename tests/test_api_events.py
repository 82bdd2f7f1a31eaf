"""``POST /api/ingest/server/event``: the pageview's checks plus name and properties, each
refusal naming its field, and what reaches the queue (in-process, the suite's real Redis)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ingest_api.errors import BadRequest
from ingest_api.events import event_from
from ingest_api.intake import queued
from shared.control.sites import Site
from shared.envelope import Envelope
from tests.endpoint import BODY, World, assert_error
from tests.validated import validated

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


def test_event_answers_202_and_is_queued_as_an_event_with_trimmed_name(api: TestClient, world: World) -> None:
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
    assert post_event(api, world.secret, {**BODY, "name": "click", "properties": None}).status_code == 202
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
        validated(orjson.dumps(body), NOW_MS, event_from)
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
def test_bad_names_and_properties_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    assert refusal(**changes) == message


def test_limits_themselves_are_accepted() -> None:
    properties = {("k" * 127) + str(n % 10) if n < 10 else f"key{n}": "v" * 1024 for n in range(50)}
    event = validated(orjson.dumps({**EVENT, "name": "n" * 200, "properties": properties}), NOW_MS, event_from)
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
    # 422: an Idempotency-Key that another body used.
    assert set(batch["responses"]) == {"202", "400", "401", "403", "422", "429", "431", "503"}
    assert set(batch["requestBody"]["content"]) == {
        "application/json",
        "application/x-ndjson",
    }
    assert [parameter["name"] for parameter in batch["parameters"]] == [
        "X-Hitstream-Lane",
        "Idempotency-Key",
    ]


# --- numbers the store can hold ---------------------------------------------------------


def event_body_with_property(number: bytes) -> bytes:
    """An event body whose property "n" is the JSON number text ``number`` as sent."""
    return orjson.dumps({**EVENT, "properties": {"plan": "pro"}})[:-2] + b', "n": ' + number + b"}}"


@pytest.mark.parametrize(
    "number",
    [b"1e309", b"-1e309", b"1e400", b"-1.5e99999", b"1" + b"0" * 400, b"-" + b"9" * 309 + b".5"],
)
def test_property_numbers_beyond_a_double_are_refused_not_queued_as_null(number: bytes) -> None:
    with pytest.raises(BadRequest) as raised:
        validated(event_body_with_property(number), NOW_MS, event_from)
    assert raised.value.message == ("property numbers must be from -1.7976931348623157e+308 to 1.7976931348623157e+308")


@pytest.mark.parametrize(
    "number, value",
    [
        (b"1.7976931348623157e308", 1.7976931348623157e308),
        (b"-1.7976931348623157e308", -1.7976931348623157e308),
        (b"5e-324", 5e-324),
        (b"1e-400", 0.0),  # below the smallest double: zero, as in any JSON reader
        (b"18446744073709551615", 2**64 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b"18446744073709551616", 1.8446744073709552e19),  # beyond 64 bits: a double
        (b"-0.0", -0.0),
    ],
)
def test_property_numbers_a_double_or_64_bit_integer_holds_are_queued_as_sent(number: bytes, value: float) -> None:
    event = validated(event_body_with_property(number), NOW_MS, event_from)
    assert event.event_properties["n"] == value
    assert type(event.event_properties["n"]) is type(value)
    assert orjson.loads(orjson.dumps(event.event_properties))["n"] == value  # the envelope's JSON


# --- event_id and key case ----------------------------------------------------------------


def test_event_id_is_an_optional_uuid_kept_lower_cased() -> None:
    event = validated(orjson.dumps({**EVENT, "event_id": "0B5F3A2C-1D4E-4F6A-8B7C-9D0E1F2A3B4C"}), NOW_MS, event_from)
    assert event.event_id == "0b5f3a2c-1d4e-4f6a-8b7c-9d0e1f2a3b4c"
    assert validated(orjson.dumps({**EVENT, "event_id": None}), NOW_MS, event_from).event_id is None
    assert validated(orjson.dumps(EVENT), NOW_MS, event_from).event_id is None
    for wrong in ("nope", 7, ["0b5f3a2c-1d4e-4f6a-8b7c-9d0e1f2a3b4c"]):
        assert refusal(event_id=wrong) == "Bad request body: event_id must be a UUID"
    assert refusal(event_id="nope", url="nope") == "url must be an absolute http or https URL"


@pytest.mark.parametrize(
    "name_key, properties_key", [("NAME", "PROPERTIES"), ("Name", "Properties"), ("nAmE", "propertieſ")]
)
def test_name_properties_and_event_id_match_in_any_case_and_property_keys_stay_as_sent(
    name_key: str, properties_key: str
) -> None:
    body = {
        **BODY,
        name_key: " add_to_cart ",
        properties_key: {"SKU": "a-1", "sku": "b-2"},
        "Event_ID": "0B5F3A2C-1D4E-4F6A-8B7C-9D0E1F2A3B4C",
    }
    event = validated(orjson.dumps(body), NOW_MS, event_from)
    assert (event.event_name, event.event_properties) == ("add_to_cart", {"SKU": "a-1", "sku": "b-2"})
    assert event.event_id == "0b5f3a2c-1d4e-4f6a-8b7c-9d0e1f2a3b4c"


@pytest.mark.parametrize(
    "keys, name, properties",
    [
        (b'"name": "first", "NAME": "second", "properties": {"a": 1}, "Properties": null', "second", {}),
        (b'"properties": null, "NAME": "first", "name": "second", "Properties": {"a": 1, "a": 2}', "second", {"a": 2}),
        (
            b'"name": "first", "Name": "second", "name": "third", "properties": {"A": 1, "a": 2}',
            "third",
            {"A": 1, "a": 2},
        ),
    ],
)
def test_a_later_key_for_name_or_properties_in_any_case_overwrites_the_earlier_one(
    keys: bytes, name: str, properties: dict[str, Any]
) -> None:
    event = validated(orjson.dumps(BODY)[:-1] + b", " + keys + b"}", NOW_MS, event_from)
    assert (event.event_name, event.event_properties) == (name, properties)
    site = Site(id="6f0b7e0e-4d5c-4b7a-9a51-2f4f5b8f3c11", domain="example.com", created_at="2026-01-01T00:00:00Z")
    queued_event = Envelope.from_json(queued(event, site, NOW_MS).envelope)
    assert (queued_event.event_name, queued_event.event_properties) == (name, properties)
