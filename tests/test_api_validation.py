"""Unit tests of the pageview checks: each rule, its boundaries and HitKeep's messages."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from ingest_api.errors import BadRequest
from ingest_api.events import event_from
from ingest_api.intake import queued
from ingest_api.validation import (
    EARLIEST_TIMESTAMP_MS,
    LATEST_TIMESTAMP_MS,
    MAX_BODY_BYTES,
    MAX_DIMENSION,
    MIN_DIMENSION,
    go_folded,
)
from shared import storable
from shared.control.sites import Site
from shared.envelope import Envelope
from tests.validated import validated
from workers.store.schema import DROP_COUNTS, EVENTS, PAGEVIEWS

NOW_MS = int(time.time() * 1000)
VALID: dict[str, Any] = {
    "url": "https://example.com/pricing?utm_source=x",
    "timestamp": "2026-04-15T12:00:00Z",
    "visitor_ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
}


def parse(**changes: Any) -> Any:
    values = {**VALID, **changes}
    return validated(orjson.dumps({k: v for k, v in values.items() if v is not ...}), NOW_MS)


def refusal(**changes: Any) -> str:
    with pytest.raises(BadRequest) as raised:
        parse(**changes)
    assert raised.value.status == 400
    return raised.value.message


def padded_body(size: int) -> bytes:
    """A valid pageview body of exactly ``size`` bytes (padding in an ignored field)."""
    body = orjson.dumps({**VALID, "pad": ""})
    return body[:-2] + b"x" * (size - len(body)) + b'"}'


# --- body -----------------------------------------------------------------------------------


def test_body_of_exactly_64_kib_is_accepted_and_one_byte_more_is_not() -> None:
    assert validated(padded_body(MAX_BODY_BYTES), NOW_MS).url == VALID["url"]
    with pytest.raises(BadRequest, match="^Bad request body$"):
        validated(padded_body(MAX_BODY_BYTES + 1), NOW_MS)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'"text"', b"null", b"{", b"\xff\xfe"])
def test_empty_non_json_and_non_object_bodies_are_bad_request_bodies(body: bytes) -> None:
    with pytest.raises(BadRequest, match="^Bad request body$"):
        validated(body, NOW_MS)


@pytest.mark.parametrize(
    "field, value",
    [
        ("url", 5),
        ("timestamp", 1713182400),
        ("visitor_ip", ["1.2.3.4"]),
        ("user_agent", {"ua": "x"}),
        ("referrer", 1),
        ("language", True),
        ("screen_width", "1920"),
        ("screen_width", 1920.5),
        ("viewport_height", True),
        ("dnt", "yes"),
        ("dnt", 1),
    ],
)
def test_a_field_of_the_wrong_json_type_is_a_bad_request_body_naming_the_field(field: str, value: Any) -> None:
    expected = {"screen_width": "an integer", "viewport_height": "an integer", "dnt": "a boolean"}
    assert refusal(**{field: value}) == f"Bad request body: {field} must be {expected.get(field, 'a string')}"


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1" + b"0" * 1000, b"18446744073709551616"])
def test_numbers_beyond_a_double_or_64_bits_name_the_field(number: bytes) -> None:
    body = orjson.dumps(VALID)[:-1] + b', "screen_width": ' + number + b"}"
    with pytest.raises(BadRequest, match="^Bad request body: screen_width must be an integer$"):
        validated(body, NOW_MS)


@pytest.mark.parametrize("body", [b'{"url": "\\ud800"}', b'{"screen_width": NaN}', b"[" * 100_000])
def test_json_the_fallback_decoder_would_accept_but_orjson_refuses_stays_a_bad_body(body: bytes) -> None:
    with pytest.raises(BadRequest, match="^Bad request body$"):
        validated(body, NOW_MS)


def test_unknown_fields_and_top_level_utm_keys_are_ignored() -> None:
    assert parse(utm_source="ignored", extra={"a": 1}).url == VALID["url"]


# --- UUIDs: null and absent mean "generate one", anything malformed is a bad body -------------


@pytest.mark.parametrize("field", ["page_id", "session_id"])
def test_uuid_null_and_absent_both_mean_none(field: str) -> None:
    assert getattr(parse(**{field: None}), field) is None
    assert getattr(parse(), field) is None


@pytest.mark.parametrize("field", ["page_id", "session_id"])
def test_uuid_in_any_case_is_kept_lower_cased(field: str) -> None:
    assert getattr(parse(**{field: "2489E9AD-2EE2-8E00-8EC9-32D5F69181C0"}), field) == (
        "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-uuid",
        "2489e9ad2ee28e008ec932d5f69181c0",
        "{2489e9ad-2ee2-8e00-8ec9-32d5f69181c0}",
        "2489e9ad-2ee2-8e00-8ec9-32d5f69181c",
        "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0 ",
        42,
    ],
)
@pytest.mark.parametrize("field", ["page_id", "session_id"])
def test_malformed_uuid_is_a_bad_request_body_naming_the_field(field: str, value: Any) -> None:
    assert refusal(**{field: value}) == f"Bad request body: {field} must be a UUID"


# --- url --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, host",
    [
        ("HTTPS://Example.COM/a", "example.com"),
        ("http://www.example.com:8080/a?b=c#d", "www.example.com"),
        ("https://example.com./", "example.com."),
        ("https://bücher.example/", "bücher.example"),
        ("https://user:pw@example.com/", "example.com"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1"),
    ],
)
def test_absolute_http_urls_are_accepted_with_their_host(url: str, host: str) -> None:
    pageview = parse(url=url)
    assert (pageview.url, pageview.host) == (url, host)


@pytest.mark.parametrize(
    "url",
    [
        ...,
        None,
        "",
        "example.com/a",
        "/relative",
        "ftp://example.com/",
        "https://",
        "https:///path",
        "https://:80/",
        "https://example.com:port/",
        "https://example.com:99999/",
        "https://exa mple.com/",
        "https://example.com/\n",
        "javascript:alert(1)",
        "https://[::1/",
    ],
)
def test_anything_but_an_absolute_http_url_is_refused(url: Any) -> None:
    assert refusal(url=url) == "url must be an absolute http or https URL"


def test_url_of_4096_characters_is_accepted_and_4097_is_refused_naming_the_field() -> None:
    prefix = "https://example.com/"
    assert parse(url=prefix + "a" * (4096 - len(prefix))).host == "example.com"
    assert refusal(url=prefix + "a" * (4097 - len(prefix))) == "url must be at most 4096 characters"


# --- timestamp --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp, expected_ms",
    [
        ("2026-04-15T12:00:00Z", 1776254400000),
        ("2026-04-15T12:00:00.5Z", 1776254400500),
        ("2026-04-15T12:00:00.123456789Z", 1776254400123),
        ("2026-04-15T14:00:00+02:00", 1776254400000),
        ("2026-04-15T07:30:00-04:30", 1776254400000),
        ("2016-02-29T00:00:00Z", 1456704000000),
        ("1999-12-31T23:59:59Z", 946684799000),
    ],
)
def test_rfc3339_variants_give_the_utc_millisecond(timestamp: str, expected_ms: int) -> None:
    assert parse(timestamp=timestamp).timestamp_ms == expected_ms


@pytest.mark.parametrize(
    "timestamp",
    [
        ...,
        None,
        "",
        "2026-04-15",
        "2026-04-15 12:00:00Z",
        "2026-04-15t12:00:00Z",
        "2026-04-15T12:00:00z",
        "2026-04-15T12:00Z",
        "2026-04-15T12:00:00",
        "2026-04-15T12:00:00+0200",
        "2026-04-15T12:00:00.Z",
        "2026-02-30T12:00:00Z",
        "2026-13-01T12:00:00Z",
        "2026-04-15T24:00:00Z",
        "2026-04-15T12:60:00Z",
        "2026-04-15T12:00:60Z",
        "2026-04-15T12:00:00+24:00",
        "2026-04-15T12:00:00-05:60",
        "20260415T120000Z",
        "１２026-04-15T12:00:00Z",
    ],
)
def test_anything_but_strict_rfc3339_is_refused(timestamp: Any) -> None:
    assert refusal(timestamp=timestamp) == "timestamp must be RFC3339"


def test_timestamps_up_to_24_hours_ahead_are_accepted_and_later_ones_refused() -> None:
    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"

    limit_ms = NOW_MS + 24 * 3600 * 1000
    assert parse(timestamp=iso(limit_ms)).timestamp_ms == limit_ms
    assert refusal(timestamp=iso(limit_ms + 1)) == "timestamp must not be more than 24 hours in the future"
    assert parse(timestamp="2001-01-01T00:00:00Z").timestamp_ms == 978307200000  # replay of old data


STORABLE_TIMES = "timestamp must be from 1970-01-01T00:00:00.000Z to 2106-02-07T06:28:15.999Z"


@pytest.mark.parametrize(
    "timestamp",
    [
        "1969-12-31T23:59:59.999Z",
        "1969-07-20T20:17:40Z",
        "1970-01-01T00:59:59.999+01:00",  # 1969-12-31T23:59:59.999Z
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "0001-01-01T00:00:00Z",
        "1900-01-01T00:00:00Z",  # DateTime64 holds it, DateTime and Date do not
    ],
)
def test_times_before_1970_utc_are_refused_naming_the_storable_range(timestamp: str) -> None:
    assert refusal(timestamp=timestamp) == STORABLE_TIMES


@pytest.mark.parametrize(
    "timestamp, expected_ms",
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T23:00:00.001-01:00", 1),
    ],
)
def test_the_first_storable_millisecond_is_accepted_in_any_offset(timestamp: str, expected_ms: int) -> None:
    assert parse(timestamp=timestamp).timestamp_ms == expected_ms


def test_times_after_2106_are_refused_even_when_the_clock_would_allow_them() -> None:
    # Only a clock beyond 2106 could let such a time pass the 24-hour rule: the store's
    # DateTime (seconds in a UInt32) would wrap it.
    far_future_ms = 253_402_300_800_000 + 2 * 86_400_000  # 10000-01-02: past any RFC 3339 time
    last = validated(orjson.dumps({**VALID, "timestamp": "2106-02-07T06:28:15.999Z"}), far_future_ms)
    assert last.timestamp_ms == LATEST_TIMESTAMP_MS
    for timestamp in ("2106-02-07T06:28:16Z", "2149-06-06T00:00:00Z", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(BadRequest, match=f"^{STORABLE_TIMES}$"):
            validated(orjson.dumps({**VALID, "timestamp": timestamp}), far_future_ms)


def test_the_api_bounds_are_the_ranges_of_the_column_types_the_schema_declares() -> None:
    """The bounds come from shared.storable; the columns they guard must have the types it names."""
    columns = {
        (table.name, column.name): column.type for table in (PAGEVIEWS, EVENTS, DROP_COUNTS) for column in table.columns
    }
    for table in ("pageviews", "events"):
        assert columns[(table, "timestamp")] in storable.TIMESTAMP_COLUMN_TYPES
        for size in ("screen_width", "screen_height", "viewport_width", "viewport_height"):
            assert columns[(table, size)] == storable.DIMENSION_COLUMN_TYPE
    assert columns[("drop_counts", "minute")] in storable.TIMESTAMP_COLUMN_TYPES
    assert (EARLIEST_TIMESTAMP_MS, LATEST_TIMESTAMP_MS) == storable.TIMESTAMP_RANGE_MS == (0, 2**32 * 1000 - 1)
    low, high = storable.INTEGER_RANGES[storable.DIMENSION_COLUMN_TYPE]
    assert low == MIN_DIMENSION <= MAX_DIMENSION <= high


# --- keys: matched as Go's encoding/json matches them (HitKeep) --------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        {"url": "URL", "timestamp": "TIMESTAMP", "visitor_ip": "VISITOR_IP", "user_agent": "USER_AGENT"},
        {"url": "Url", "timestamp": "TimeStamp", "visitor_ip": "Visitor_IP", "user_agent": "User_Agent"},
        {"url": "uRL", "timestamp": "timestamp", "visitor_ip": "vIsItOr_Ip", "user_agent": "user_agent"},
        # LATIN SMALL LETTER LONG S folds onto s in Go.
        {"url": "url", "timestamp": "timeſtamp", "visitor_ip": "viſitor_ip", "user_agent": "uſer_agent"},
    ],
)
def test_keys_in_another_case_fill_their_fields(keys: dict[str, str]) -> None:
    body = {keys[name]: value for name, value in VALID.items()}
    extras = {
        "Page_ID": "2489E9AD-2EE2-4E00-8EC9-32D5F69181C0",
        "SCREEN_WIDTH": 1920,
        "Referrer": "https://r.example/",
        "LANGUAGE": "en",
        "DNT": False,
        "Session_Id": "5b0c9f3e-0d8f-4e5a-9c1e-2f3a4b5c6d7e",
    }
    pageview = validated(orjson.dumps({**body, **extras}), NOW_MS)
    assert (pageview.url, pageview.timestamp_ms, pageview.visitor_ip, pageview.user_agent) == (
        VALID["url"],
        1776254400000,
        VALID["visitor_ip"],
        VALID["user_agent"],
    )
    assert (pageview.page_id, pageview.session_id) == (
        "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0",
        "5b0c9f3e-0d8f-4e5a-9c1e-2f3a4b5c6d7e",
    )
    assert (pageview.dimensions["screen_width"], pageview.referrer, pageview.language) == (
        1920,
        "https://r.example/",
        "en",
    )


@pytest.mark.parametrize(
    "body, url",
    [
        # A later key for the same field overwrites an earlier one, exact or folded.
        (b'{"url": "https://example.com/a", "URL": "https://example.com/b"}', "https://example.com/b"),
        (b'{"URL": "https://example.com/b", "url": "https://example.com/a"}', "https://example.com/a"),
        (
            b'{"Url": "https://example.com/a", "uRl": "https://example.com/b", "URL": "https://example.com/c"}',
            "https://example.com/c",
        ),
        (b'{"url": "https://example.com/a", "url": "https://example.com/b"}', "https://example.com/b"),
        # A repeated exact key after a folded one: the last occurrence still wins.
        (
            b'{"url": "https://example.com/a", "URL": "https://example.com/b", "url": "https://example.com/c"}',
            "https://example.com/c",
        ),
        (
            b'{"URL": "https://example.com/a", "url": "https://example.com/b", "URL": "https://example.com/c"}',
            "https://example.com/c",
        ),
        # An escaped key is the key it spells.
        (rb'{"\u0055RL": "https://example.com/b"}', "https://example.com/b"),
    ],
)
def test_a_field_given_twice_takes_the_last_value_in_the_document(body: bytes, url: str) -> None:
    rest = orjson.dumps({name: value for name, value in VALID.items() if name != "url"})
    assert validated(body[:-1] + b", " + rest[1:], NOW_MS).url == url


def test_a_later_null_for_the_same_field_leaves_it_absent() -> None:
    body = orjson.dumps({**VALID, "URL": None})
    with pytest.raises(BadRequest, match="^url must be an absolute http or https URL$"):
        validated(body, NOW_MS)


@pytest.mark.parametrize(
    "key",
    [
        "v\u0131sitor_ip",  # dotless i: folds only to itself in Go
        "v\u0130sitor_ip",  # dotted capital I: likewise
        "visitor-ip",
        "visitorip",
        " visitor_ip",
        "visitor_ip\u0000",
    ],
)
def test_keys_that_only_resemble_a_field_are_ignored(key: str) -> None:
    body = {name: value for name, value in VALID.items() if name != "visitor_ip"}
    with pytest.raises(BadRequest, match="^visitor_ip must be a valid IP address$"):
        validated(orjson.dumps({**body, key: "203.0.113.7"}), NOW_MS)


def test_a_folded_key_of_the_wrong_type_is_refused_under_the_field_name() -> None:
    assert refusal(SCREEN_WIDTH="1920") == "Bad request body: screen_width must be an integer"
    assert refusal(Page_Id="nope") == "Bad request body: page_id must be a UUID"


@pytest.mark.parametrize(
    "key, folded",
    [
        ("URL", "url"),
        ("Visitor_IP", "visitor_ip"),
        ("\u212aind", "kind"),
        ("\u017fite", "site"),
        ("\u0130d", "\u0130d"),
        ("\u0131d", "\u0131d"),
        ("STRASSE", "strasse"),
        ("stra\u00dfe", "stra\u00dfe"),
    ],
)
def test_go_case_folding_reaches_ascii_only_from_ascii_kelvin_and_long_s(key: str, folded: str) -> None:
    assert go_folded(key) == folded


# --- visitor_ip -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, stored",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:cb00:7107", "203.0.113.7"),
    ],
)
def test_ipv4_and_ipv6_are_accepted_and_ipv4_mapped_ipv6_is_unmapped(given: str, stored: str) -> None:
    assert parse(visitor_ip=given).visitor_ip == stored


@pytest.mark.parametrize(
    "value",
    [
        ...,
        None,
        "",
        "203.0.113.007",
        "010.0.0.1",
        "203.0.113",
        "203.0.113.7:80",
        "203.0.113.0/24",
        "[2001:db8::1]",
        "fe80::1%eth0",
        " 203.0.113.7",
        "256.0.0.1",
        "example.com",
        "203.0.113.7\x00",
    ],
)
def test_anything_but_a_bare_ip_address_is_refused(value: Any) -> None:
    assert refusal(visitor_ip=value) == "visitor_ip must be a valid IP address"


# --- user_agent and our bounds ----------------------------------------------------------------


@pytest.mark.parametrize("value", [..., None, "", "   \t"])
def test_missing_or_blank_user_agent_is_refused(value: Any) -> None:
    assert refusal(user_agent=value) == "user_agent is required"


def test_user_agent_is_trimmed_and_capped_at_2048_characters() -> None:
    assert parse(user_agent="  Mozilla/5.0 \n").user_agent == "Mozilla/5.0"
    assert parse(user_agent="a" * 2048).user_agent == "a" * 2048
    assert refusal(user_agent="a" * 2049) == "user_agent must be at most 2048 characters"


@pytest.mark.parametrize("field, limit", [("referrer", 2048), ("language", 64)])
def test_referrer_and_language_are_capped_naming_the_field(field: str, limit: int) -> None:
    assert getattr(parse(**{field: "a" * limit}), field) == "a" * limit
    assert refusal(**{field: "a" * (limit + 1)}) == f"{field} must be at most {limit} characters"
    assert getattr(parse(**{field: None}), field) is None


@pytest.mark.parametrize("field", ["screen_width", "screen_height", "viewport_width", "viewport_height"])
def test_sizes_are_integers_from_0_to_100000_naming_the_field(field: str) -> None:
    assert parse(**{field: 0}).dimensions[field] == 0
    assert parse(**{field: 100_000}).dimensions[field] == 100_000
    assert parse(**{field: None}).dimensions[field] is None
    message = f"{field} must be an integer from 0 to 100000"
    assert refusal(**{field: 100_001}) == message
    assert refusal(**{field: -1}) == message


def test_checks_run_in_hitkeep_order_and_the_first_failure_decides() -> None:
    everything_wrong = {"url": "ftp://x", "timestamp": "nope", "visitor_ip": "nope", "user_agent": ""}
    assert refusal(**everything_wrong) == "url must be an absolute http or https URL"
    assert refusal(**{**everything_wrong, "url": VALID["url"]}) == "timestamp must be RFC3339"
    assert refusal(visitor_ip="nope", user_agent="", referrer="a" * 5000) == "visitor_ip must be a valid IP address"
    assert refusal(user_agent="", referrer="a" * 5000) == "user_agent is required"


def test_dnt_true_is_reported_and_null_or_false_is_not() -> None:
    assert parse(dnt=True).dnt is True
    assert parse(dnt=False).dnt is False
    assert parse(dnt=None).dnt is False


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"page_id": "2489E9AD-2EE2-4E00-8EC9-32D5F69181C0", "referrer": "https://a.example/", "screen_width": 7},
        {"name": "signup", "properties": {"plan": "pro", "seats": 3, "trial": True, "ratio": 0.5}},
    ],
)
def test_queued_envelope_bytes_are_exactly_what_the_envelope_contract_writes(changes: dict[str, Any]) -> None:
    # The hand-off encodes envelopes without building an Envelope: the bytes must still be
    # Envelope.to_json's own (every field in its place, nothing more), for pageviews and events.
    body = orjson.dumps({**VALID, **changes})
    pageview = validated(body, NOW_MS, event_from) if "name" in changes else validated(body, NOW_MS)
    site = Site(id="6f0b7e0e-4d5c-4b7a-9a51-2f4f5b8f3c11", domain="example.com", created_at="2026-01-01T00:00:00Z")
    envelope = queued(pageview, site, NOW_MS).envelope
    decoded = Envelope.from_json(envelope)
    assert decoded.to_json() == envelope
    assert (decoded.site_id, decoded.url, decoded.timestamp_ms, decoded.kind) == (
        site.id,
        VALID["url"],
        1776254400000,
        "event" if "name" in changes else "pageview",
    )
    assert (decoded.referrer, decoded.screen_width, decoded.event_properties) == (
        changes.get("referrer"),
        changes.get("screen_width"),
        changes.get("properties", {}),
    )
