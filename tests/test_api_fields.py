"""The field table (ingest_api.fields) against what the checks and the served OpenAPI document do:
every row's type, requirement, limits and example hold at the endpoint's checks, in table order."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import pytest

from ingest_api.errors import BadRequest
from ingest_api.events import event_from
from ingest_api.fields import EVENT_BODY, PAGEVIEW_BODY, BodyField, JsonType
from ingest_api.openapi import DOCUMENT
from ingest_api.validation import pageview_from
from tests.validated import Check, validated

NOW_MS = int(time.time() * 1000)
BODIES = [
    pytest.param(PAGEVIEW_BODY, pageview_from, "Pageview", id="pageview"),
    pytest.param(EVENT_BODY, event_from, "Event", id="event"),
]
# A JSON value of each type that is not the field's own (a string is not a UUID, a bool not an integer).
OTHER_TYPE: dict[JsonType, list[Any]] = {
    JsonType.STRING: [5, 1.5, True, ["x"], {"x": 1}],
    JsonType.UUID: [5, True, "not-a-uuid", ["2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"]],
    JsonType.INTEGER: ["5", 1.5, True, [5]],
    JsonType.BOOLEAN: ["true", 1, 0, [True]],
}
TYPE_CHECKED = [field for field in PAGEVIEW_BODY if field.json_type in OTHER_TYPE]
EVENT_TYPE_CHECKED = [field for field in EVENT_BODY if field.json_type in OTHER_TYPE]


def example(body: tuple[BodyField, ...]) -> dict[str, Any]:
    return {field.name: field.example for field in body if field.example is not None}


def refusal(check: Check, values: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as raised:
        validated(orjson.dumps(values), NOW_MS, check)
    assert raised.value.status == 400
    return raised.value.message


@pytest.mark.parametrize("body, check, schema", BODIES)
def test_the_example_of_each_body_passes_every_check_and_is_the_served_example(
    body: tuple[BodyField, ...], check: Check, schema: str
) -> None:
    item = validated(orjson.dumps(example(body)), NOW_MS, check)
    assert item.url == example(body)["url"]
    assert DOCUMENT["components"]["schemas"][schema]["example"] == example(body)


@pytest.mark.parametrize("body, check, schema", BODIES)
def test_each_required_field_left_out_is_refused_naming_that_field(
    body: tuple[BodyField, ...], check: Check, schema: str
) -> None:
    required = [field.name for field in body if field.required]
    assert DOCUMENT["components"]["schemas"][schema]["required"] == required
    for name in required:
        values = example(body)
        del values[name]
        assert refusal(check, values).startswith(name + " ")


@pytest.mark.parametrize(
    "body, check, field",
    [
        *((PAGEVIEW_BODY, pageview_from, field) for field in TYPE_CHECKED),
        *((EVENT_BODY, event_from, field) for field in EVENT_TYPE_CHECKED),
    ],
    ids=lambda value: value.name if isinstance(value, BodyField) else "",
)
def test_each_field_of_another_json_type_is_a_bad_request_body_naming_it_as_the_table_says(
    body: tuple[BodyField, ...], check: Check, field: BodyField
) -> None:
    for value in OTHER_TYPE[field.json_type]:
        message = refusal(check, {**example(body), field.name: value})
        assert message == f"Bad request body: {field.name} must be {field.expected}"


@pytest.mark.parametrize("first, second", list(itertools.pairwise(TYPE_CHECKED)), ids=lambda field: field.name)
def test_with_two_fields_of_the_wrong_type_the_one_earlier_in_the_table_is_named(
    first: BodyField, second: BodyField
) -> None:
    values = {**example(PAGEVIEW_BODY), first.name: OTHER_TYPE[first.json_type][0], second.name: [0]}
    assert refusal(pageview_from, values) == f"Bad request body: {first.name} must be {first.expected}"


@pytest.mark.parametrize("body, check, schema", BODIES)
def test_a_string_one_past_its_maximum_length_is_refused_naming_the_field_and_limit(
    body: tuple[BodyField, ...], check: Check, schema: str
) -> None:
    for field in body:
        if field.json_type is not JsonType.STRING or field.max_length is None:
            continue
        served = DOCUMENT["components"]["schemas"][schema]["properties"][field.name]
        assert served["maxLength"] == field.max_length
        too_long = str(field.example) + "x" * (field.max_length + 1 - len(str(field.example)))
        message = refusal(check, {**example(body), field.name: too_long})
        assert message == f"{field.name} must be at most {field.max_length} characters"


@pytest.mark.parametrize("field", [field for field in PAGEVIEW_BODY if field.minimum is not None])
def test_an_integer_outside_its_range_is_refused_and_its_bounds_are_accepted(field: BodyField) -> None:
    assert field.maximum is not None and field.minimum is not None
    served = DOCUMENT["components"]["schemas"]["Pageview"]["properties"][field.name]
    assert (served["minimum"], served["maximum"]) == (field.minimum, field.maximum)
    for bound in (field.minimum, field.maximum):
        item = validated(orjson.dumps({**example(PAGEVIEW_BODY), field.name: bound}), NOW_MS)
        assert item.dimensions[field.name] == bound
    for outside in (field.minimum - 1, field.maximum + 1):
        message = refusal(pageview_from, {**example(PAGEVIEW_BODY), field.name: outside})
        assert message == f"{field.name} must be an integer from {field.minimum} to {field.maximum}"


@pytest.mark.parametrize("body, check, schema", BODIES)
def test_a_field_that_is_not_required_may_be_null_and_is_then_absent(
    body: tuple[BodyField, ...], check: Check, schema: str
) -> None:
    served = DOCUMENT["components"]["schemas"][schema]["properties"]
    for field in body:
        if field.required:
            assert "null" not in served[field.name]["type"]
            continue
        assert "null" in served[field.name]["type"]
        with_null = validated(orjson.dumps({**example(body), field.name: None}), NOW_MS, check)
        without = validated(orjson.dumps({k: v for k, v in example(body).items() if k != field.name}), NOW_MS, check)
        assert with_null == without
