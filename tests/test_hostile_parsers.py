"""Property tests of every parser and validator against arbitrary input: each either returns
a value that holds its rule or refuses with its documented error, never another exception.
Where the standard library has an independent parser it serves as the oracle.
(URL paths, UTM values and referrer-driven pipeline runs are in test_pipeline_properties.py.)"""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest_api.errors import BadRequest
from shared.hosts import normalise_domain, referrer_host
from tests.validated import validated
from workers.pipeline.url import qr_id

NOW_MS = 4_102_444_800_000  # 2100-01-01: every generated past timestamp is allowed
VALID = {
    "url": "https://example.com/",
    "timestamp": "2026-04-15T12:00:00Z",
    "visitor_ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
}
hostile_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00:/.[]%@T Z+-"), max_size=80)


def parse(**changes: object) -> object:
    return validated(orjson.dumps({**VALID, **changes}), NOW_MS)


@given(
    st.dictionaries(
        st.sampled_from([*VALID, "page_id", "screen_width", "dnt", "x"]),
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | hostile_text,
        max_size=8,
    )
)
def test_any_json_object_is_a_pageview_or_a_bad_request(values: dict[str, object]) -> None:
    # json, not orjson: orjson refuses some of the generated integers before the API sees them.
    try:
        validated(json.dumps(values).encode(), NOW_MS)
    except BadRequest as refusal:
        assert refusal.status == 400 and refusal.message


@given(st.binary(max_size=200))
def test_any_bytes_are_a_pageview_or_a_bad_request(body: bytes) -> None:
    try:
        validated(body, NOW_MS)
    except BadRequest as refusal:
        assert refusal.status == 400


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)))
def test_rfc3339_agrees_with_the_standard_library(moment: datetime) -> None:
    expected_ms = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse(timestamp=rfc3339(moment)).timestamp_ms == expected_ms  # type: ignore[attr-defined]


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(1969, 12, 31, 23, 59, 59, 999_999), timezones=st.just(UTC)
    ),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
def test_every_time_before_1970_utc_is_refused_in_any_offset(moment: datetime, offset_minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    with pytest.raises(BadRequest, match="^timestamp must be from 1970-01-01T00:00:00.000Z to "):
        parse(timestamp=rfc3339(local))


@given(hostile_text)
def test_timestamp_text_is_refused_unless_the_standard_library_reads_it_too(text: str) -> None:
    try:
        parse(timestamp=text)
    except BadRequest as refusal:
        assert refusal.message.startswith("timestamp")
        return
    assert datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


@given(st.ip_addresses())
def test_every_ip_address_is_accepted_in_its_normal_form(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    expected = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
    assert parse(visitor_ip=str(address)).visitor_ip == str(expected)  # type: ignore[attr-defined]


@given(hostile_text)
def test_ip_text_is_refused_unless_it_is_an_address(text: str) -> None:
    try:
        accepted = parse(visitor_ip=text).visitor_ip  # type: ignore[attr-defined]
    except BadRequest as refusal:
        assert refusal.message == "visitor_ip must be a valid IP address"
        return
    assert ipaddress.ip_address(text) == ipaddress.ip_address(accepted) or ipaddress.ip_address(text).ipv4_mapped


@given(st.uuids(), st.booleans())
def test_uuids_in_any_case_are_kept_lower_cased(value: uuid.UUID, upper: bool) -> None:
    text = str(value).upper() if upper else str(value)
    assert parse(page_id=text).page_id == str(value)  # type: ignore[attr-defined]


@given(hostile_text)
def test_uuid_text_is_refused_unless_it_is_a_canonical_uuid(text: str) -> None:
    try:
        parse(session_id=text)
    except BadRequest:
        return
    assert str(uuid.UUID(text)) == text.lower() and len(text) == 36
    assert qr_id(text) == text.lower()


@given(hostile_text)
def test_url_is_refused_or_has_a_host(text: str) -> None:
    try:
        pageview = parse(url=text)
    except BadRequest as refusal:
        assert refusal.message.startswith("url")
        return
    assert pageview.host and text.lower().startswith(("http:", "https:"))  # type: ignore[attr-defined]


@given(hostile_text)
def test_domain_normal_form_is_stable_or_refused(text: str) -> None:
    try:
        domain = normalise_domain(text)
    except ValueError:
        return
    assert domain == domain.lower() and not domain.endswith(".") and domain.isascii()
    assert normalise_domain(domain) == domain


@given(hostile_text)
def test_referrer_host_is_a_normal_domain_or_empty(text: str) -> None:
    host = referrer_host(text)
    assert host == "" or normalise_domain(host) == host


@pytest.mark.parametrize("host", ["Example.COM.", "www.example.com:8080", "EXAMPLE.com"])
def test_url_host_and_referrer_host_reach_the_same_domain(host: str) -> None:
    assert referrer_host(f"https://{host}/x") == normalise_domain(host) == "example.com"
