"""The crawler step, through the pipeline's public interface: a known crawler's pageview or
event gives its row (flagged as a bot) and a crawler hit with the verdict on its address; an
AI fetch gives the hit alone; a dropped request gives neither. Pure: no Redis, no store."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from shared.config import Settings
from shared.control.exclusions import ExclusionKind
from shared.envelope import FetchFacts
from tests import geoip_fixtures as geo
from tests.envelopes import CHROME_WINDOWS, PAGE_TIME, SITE_ID, envelope
from tests.test_pipeline_process import rule
from workers.pipeline import Pipeline, StepFailed, build_pipeline
from workers.records import CrawlerHitRow, Drop, DropReason, EventRow, PageviewRow

GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CLAUDEBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)"
OPENAI_GPTBOT_IP = "132.196.86.7"  # in openai-gptbot's published 132.196.86.0/24
GOOGLEBOT_IP = "192.178.4.9"  # in google-googlebot's published 192.178.4.0/27
PAGE_ID = "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0"


@pytest.fixture(scope="module")
def module_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    directory = tmp_path_factory.mktemp("crawler-pipeline")
    (directory / "drop.txt").write_text("203.0.113.0/24 ; SBL000009\n")
    return build_pipeline(
        Settings(
            geoip_city_db=geo.build_city_db(directory / "city.mmdb"),
            geoip_asn_db=geo.build_asn_db(directory / "asn.mmdb"),
            spamhaus_drop_file=directory / "drop.txt",
        )
    )


@pytest.fixture
def pipeline(module_pipeline: Pipeline) -> Pipeline:
    module_pipeline.update_exclusions([])
    return module_pipeline


def rows(pipeline: Pipeline, **overrides: Any) -> tuple[Any, ...]:
    result = pipeline.process(envelope(**overrides))
    assert isinstance(result, tuple), result
    return result


def fetch(status_code: int = 200, content_type: str | None = None, **facts: int | None) -> FetchFacts:
    return FetchFacts(
        status_code=status_code,
        content_type=content_type,
        response_ms=facts.get("response_ms"),
        bytes_served=facts.get("bytes_served"),
    )


def ai_fetch(**overrides: Any) -> dict[str, Any]:
    return {"kind": "ai_fetch", "url": "//docs.mysite.example/guides/ai?from=bot", "fetch": fetch(), **overrides}


def test_a_browsers_pageview_gives_its_row_alone(pipeline: Pipeline) -> None:
    (row,) = rows(pipeline, user_agent=CHROME_WINDOWS)
    assert type(row) is PageviewRow
    assert (row.is_bot, row.device_type) == (False, "desktop")


@pytest.mark.parametrize(
    ("user_agent", "visitor_ip", "name", "operator", "purpose", "ai", "verdict"),
    [
        (GPTBOT, OPENAI_GPTBOT_IP, "GPTBot", "OpenAI", "ai_training", True, "verified"),
        (GPTBOT, geo.LONDON_IPV4, "GPTBot", "OpenAI", "ai_training", True, "spoofed"),
        (GPTBOT, geo.MUNICH_IPV6, "GPTBot", "OpenAI", "ai_training", True, "spoofed"),
        (GOOGLEBOT, GOOGLEBOT_IP, "Googlebot", "Google", "search", False, "verified"),
        (GOOGLEBOT, geo.LONDON_IPV4, "Googlebot", "Google", "search", False, "spoofed"),
        (CLAUDEBOT, geo.LONDON_IPV4, "ClaudeBot", "Anthropic", "ai_training", True, "unverifiable"),
        ("curl/8.7.1", geo.LONDON_IPV4, "curl", "", "tool", False, "unverifiable"),
    ],
)
def test_a_crawlers_pageview_gives_its_bot_row_and_a_hit_judged_by_its_address(
    pipeline: Pipeline,
    user_agent: str,
    visitor_ip: str,
    name: str,
    operator: str,
    purpose: str,
    ai: bool,
    verdict: str,
) -> None:
    row, hit = rows(
        pipeline, user_agent=user_agent, visitor_ip=visitor_ip, url="https://mysite.example//docs/./a/?utm_source=x"
    )
    assert type(row) is PageviewRow and (row.is_bot, row.device_type) == (True, "bot")
    assert type(hit) is CrawlerHitRow
    assert (hit.crawler, hit.operator, hit.purpose, hit.ai, hit.verdict) == (name, operator, purpose, ai, verdict)
    assert (hit.site_id, hit.hit_id, hit.source, hit.timestamp, hit.received_at) == (
        SITE_ID,
        PAGE_ID,
        "pageview",
        PAGE_TIME,
        row.received_at,
    )
    assert (hit.hostname, hit.path, hit.query, hit.resource_type) == (
        "mysite.example",
        "/docs/a/",
        "utm_source=x",
        "html",
    )
    # A pageview says nothing of the server's answer.
    assert (hit.status_code, hit.content_type, hit.response_ms, hit.bytes_served) == (0, "", 0, 0)
    assert (hit.country, hit.asn, hit.provider) == (row.country, row.asn, row.provider)
    assert hit.user_agent == user_agent
    assert visitor_ip not in repr(hit) and visitor_ip not in repr(row)


def test_a_spoofed_crawler_keeps_where_its_address_is(pipeline: Pipeline) -> None:
    _, hit = rows(pipeline, user_agent=GPTBOT, visitor_ip=geo.LONDON_IPV4)
    assert (hit.verdict, hit.country, hit.asn, hit.provider) == ("spoofed", "GB", 20712, "Andrews & Arnold Ltd")


def test_a_crawler_without_an_address_is_unverifiable(pipeline: Pipeline) -> None:
    _, hit = rows(pipeline, user_agent=GPTBOT, visitor_ip=None)
    assert hit.verdict == "unverifiable"


def test_a_crawlers_event_gives_the_event_and_a_hit_from_the_event(pipeline: Pipeline) -> None:
    row, hit = rows(pipeline, user_agent=GPTBOT, visitor_ip=OPENAI_GPTBOT_IP, kind="event", event_name="signup")
    assert type(row) is EventRow and row.is_bot
    assert (hit.source, hit.crawler, hit.verdict, hit.hit_id) == ("event", "GPTBot", "verified", PAGE_ID)


@pytest.mark.parametrize(
    ("content_type", "media", "resource_type"),
    [
        (None, "", "html"),
        ("Text/HTML; charset=utf-8", "text/html", "html"),
        ("application/xhtml+xml", "application/xhtml+xml", "html"),
        ("image/webp", "image/webp", "image"),
        ("application/pdf", "application/pdf", "document"),
        ("text/markdown; charset=utf-8", "text/markdown", "document"),
        ("text/plain", "text/plain", "document"),
        ("application/json", "application/json", "other"),
        ("text/css", "text/css", "other"),
    ],
)
def test_an_ai_fetch_gives_only_its_hit_with_what_its_server_reported(
    pipeline: Pipeline, content_type: str | None, media: str, resource_type: str
) -> None:
    (hit,) = rows(
        pipeline,
        user_agent=GPTBOT,
        visitor_ip=OPENAI_GPTBOT_IP,
        **ai_fetch(fetch=fetch(404, content_type, response_ms=184, bytes_served=4096)),
    )
    assert type(hit) is CrawlerHitRow
    assert (hit.source, hit.crawler, hit.verdict) == ("ai_fetch", "GPTBot", "verified")
    assert (hit.hostname, hit.path, hit.query) == ("docs.mysite.example", "/guides/ai", "from=bot")
    assert (hit.status_code, hit.content_type, hit.resource_type) == (404, media, resource_type)
    assert (hit.response_ms, hit.bytes_served) == (184, 4096)


def test_an_ai_fetch_without_an_address_is_unverifiable(pipeline: Pipeline) -> None:
    (hit,) = rows(pipeline, user_agent=GPTBOT, visitor_ip=None, **ai_fetch())
    assert (hit.crawler, hit.verdict, hit.country, hit.response_ms, hit.bytes_served) == (
        "GPTBot",
        "unverifiable",
        "",
        0,
        0,
    )


def test_an_ai_fetch_whose_crawler_the_worker_no_longer_knows_is_kept_unnamed_and_unverifiable(
    pipeline: Pipeline,
) -> None:
    (hit,) = rows(pipeline, user_agent=CHROME_WINDOWS, visitor_ip=OPENAI_GPTBOT_IP, **ai_fetch())
    assert (hit.crawler, hit.operator, hit.purpose, hit.ai, hit.verdict) == ("", "", "", False, "unverifiable")


@pytest.mark.parametrize(
    ("kind", "value", "overrides", "reason"),
    [
        (ExclusionKind.USER_AGENT, "gptbot", {}, DropReason.SITE_USER_AGENT),
        (ExclusionKind.PATH, "/guides", {}, DropReason.SITE_PATH),
        (ExclusionKind.CIDR, "132.196.86.0/24", {}, DropReason.SITE_CIDR),
        (ExclusionKind.COUNTRY, "GB", {"visitor_ip": geo.LONDON_IPV4}, DropReason.SITE_COUNTRY),
    ],
)
@pytest.mark.parametrize("as_ai_fetch", [False, True])
def test_an_excluded_crawler_request_is_dropped_and_leaves_no_hit(
    pipeline: Pipeline,
    kind: ExclusionKind,
    value: str,
    overrides: dict[str, Any],
    reason: DropReason,
    as_ai_fetch: bool,
) -> None:
    pipeline.update_exclusions([rule(SITE_ID, kind, value)])
    sent = {"user_agent": GPTBOT, "visitor_ip": OPENAI_GPTBOT_IP, "url": "https://mysite.example/guides/x", **overrides}
    if as_ai_fetch:
        sent = {**ai_fetch(), **sent, "url": "/guides/x"}
    result = pipeline.process(envelope(**sent))
    assert isinstance(result, Drop) and result.reason == reason


@pytest.mark.parametrize("as_ai_fetch", [False, True])
def test_a_crawler_from_a_spamhaus_drop_network_is_dropped_and_leaves_no_hit(
    pipeline: Pipeline, as_ai_fetch: bool
) -> None:
    sent = {"user_agent": GPTBOT, "visitor_ip": "203.0.113.5", **(ai_fetch() if as_ai_fetch else {})}
    result = pipeline.process(envelope(**sent))
    assert isinstance(result, Drop) and result.reason == DropReason.SPAMHAUS_DROP


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "ai_fetch", "fetch": None}, "fetch must be an object for an ai_fetch, not null"),
        ({"fetch": fetch()}, "fetch must be null for a pageview or event"),
        ({**ai_fetch(), "fetch": {**fetch(), "status_code": 600}}, "fetch.status_code must be between 100 and 599"),
        ({**ai_fetch(), "fetch": {**fetch(), "status_code": "200"}}, "fetch.status_code must be an integer, not str"),
        ({**ai_fetch(), "fetch": {"content_type": None}}, "fetch.status_code must be an integer, not null"),
        ({**ai_fetch(), "fetch": {**fetch(), "content_type": 5}}, "fetch.content_type must be a string or null"),
        ({**ai_fetch(), "fetch": {**fetch(), "response_ms": -1}}, "fetch.response_ms must be between 0 and"),
        ({**ai_fetch(), "fetch": {**fetch(), "bytes_served": 2**64}}, "fetch.bytes_served must be between 0 and"),
        ({**ai_fetch(), "fetch": {**fetch(), "bytes_served": True}}, "fetch.bytes_served must be an integer, not bool"),
    ],
)
def test_an_ai_fetch_envelope_the_store_could_not_hold_is_a_poison_record(
    pipeline: Pipeline, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(StepFailed) as failure:
        pipeline.process(envelope(user_agent=GPTBOT, **overrides))
    assert failure.value.step == "envelope"
    assert message in failure.value.cause


def test_an_ai_fetch_envelope_round_trips_through_its_json() -> None:
    sent = envelope(
        user_agent=GPTBOT, page_id=str(uuid.uuid4()), **ai_fetch(fetch=fetch(200, "text/html", response_ms=9))
    )
    decoded = type(sent).from_json(sent.to_json())
    assert dataclasses.asdict(decoded) == dataclasses.asdict(sent)
    assert decoded.fetch == {"status_code": 200, "content_type": "text/html", "response_ms": 9, "bytes_served": None}
