"""The enrichment pipeline, step by step, through its public interface: envelope in, row or
drop out. Pure: no Redis, no store. GeoIP data comes from tests/geoip_fixtures.py."""

from __future__ import annotations

import dataclasses
import logging
import sys
import traceback
import uuid
from pathlib import Path

import pytest

from shared.config import Settings
from shared.control.exclusions import ExclusionKind, ExclusionRule, normalise_exclusion_value
from tests import geoip_fixtures as geo
from tests.envelopes import CHROME_WINDOWS, PAGE_TIME, SITE_ID, envelope
from tests.procs import Commands
from workers.pipeline import Pipeline, StepFailed, build_pipeline
from workers.pipeline.spam import SpamListError
from workers.pipeline.user_agent import UserAgentParser
from workers.records import EVENT_COLUMNS, PAGEVIEW_COLUMNS, Drop, DropReason, EventRow, PageviewRow

OTHER_SITE_ID = "0b8e7a52-9a1f-4a3c-8a0e-5d3e6f7a8b9c"


def rule(scope: str, kind: ExclusionKind, value: str) -> ExclusionRule:
    return ExclusionRule(
        id=str(uuid.uuid4()),
        scope=scope,
        kind=kind,
        value=normalise_exclusion_value(kind, value),
        created_at="2026-04-15T12:00:00.000+00:00",
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pipeline-data")
    geo.build_city_db(directory / "city.mmdb")
    geo.build_asn_db(directory / "asn.mmdb")
    (directory / "referrer-spam.txt").write_text("# test list\nspam.example\nmysite.example\nblog.mysite.example\n")
    (directory / "drop.txt").write_text(
        "; Spamhaus DROP List\n192.0.2.0/24 ; SBL000001\n2001:db8:bad::/48 ; SBL000002\n"
    )
    (directory / "drop.json").write_text(
        '{"cidr":"198.51.100.0/24","sblid":"SBL000003","rir":"ripencc"}\n'
        '{"cidr":"2001:db8:dead::/48","sblid":"SBL000004","rir":"arin"}\n'
        '{"type":"metadata","timestamp":1776000000,"size":2,"records":2}\n'
    )
    return directory


@pytest.fixture(scope="module")
def settings(data_dir: Path) -> Settings:
    return Settings(
        geoip_city_db=data_dir / "city.mmdb",
        geoip_asn_db=data_dir / "asn.mmdb",
        spamhaus_drop_file=data_dir / "drop.txt",
        referrer_spam_file=data_dir / "referrer-spam.txt",
    )


@pytest.fixture(scope="module")
def module_pipeline(settings: Settings) -> Pipeline:
    # Built once per module: compiling the user-agent regexes takes about 0.3 s.
    return build_pipeline(settings)


@pytest.fixture
def pipeline(module_pipeline: Pipeline) -> Pipeline:
    module_pipeline.update_exclusions([])
    return module_pipeline


def stored(pipeline: Pipeline, **overrides: object) -> PageviewRow:
    result = pipeline.process(envelope(**overrides))
    assert isinstance(result, tuple), result
    row = result[0]  # then the crawler hit, if a known crawler sent it
    assert isinstance(row, PageviewRow), result
    return row


def dropped(pipeline: Pipeline, **overrides: object) -> DropReason:
    result = pipeline.process(envelope(**overrides))
    assert isinstance(result, Drop), result
    assert result.site_id == overrides.get("site_id", SITE_ID)
    return result.reason


# --- identity and time ------------------------------------------------------------------------


def test_row_carries_ids_and_exact_millisecond_times(pipeline: Pipeline) -> None:
    row = stored(pipeline)
    assert (row.site_id, row.page_id, row.session_id) == (
        SITE_ID,
        "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0",
        "7d4f1c2a-8b3e-4f5a-9c6d-0e1f2a3b4c5d",
    )
    assert row.timestamp == PAGE_TIME
    assert (row.received_at - row.timestamp).total_seconds() == 0.005


# --- url ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hostname", "path", "query"),
    [
        ("https://MySite.Example", "mysite.example", "/", ""),
        ("https://mysite.example?x=1", "mysite.example", "/", "x=1"),
        ("https://mysite.example:8443/Docs/Intro?a=1&b=2#top", "mysite.example", "/Docs/Intro", "a=1&b=2"),
        ("https://mysite.example//docs/./a/../b/", "mysite.example", "/docs/b/", ""),
        ("https://mysite.example/a/../../x", "mysite.example", "/x", ""),
        ("https://www.mysite.example./blog/", "www.mysite.example", "/blog/", ""),
    ],
)
def test_url_splits_host_normalised_path_and_query(
    pipeline: Pipeline, url: str, hostname: str, path: str, query: str
) -> None:
    row = stored(pipeline, url=url)
    assert (row.hostname, row.path, row.query) == (hostname, path, query)


def test_utm_values_come_from_the_query_first_value_trimmed_empty_as_null(pipeline: Pipeline) -> None:
    row = stored(
        pipeline,
        url="https://mysite.example/p?utm_source=%20news%20&utm_source=second&utm_medium="
        "&utm_campaign=spring+sale&utm_content=%20%20&utm_term=shoes",
    )
    assert (row.utm_source, row.utm_medium, row.utm_campaign, row.utm_term, row.utm_content) == (
        "news",
        None,
        "spring sale",
        "shoes",
        None,
    )


def test_no_query_means_no_campaign_values_whatever_else_the_envelope_holds(pipeline: Pipeline) -> None:
    row = stored(
        pipeline, url="https://mysite.example/p", event_properties={"utm_source": "json", "hk_qr": str(uuid.uuid4())}
    )
    assert (row.utm_source, row.utm_medium, row.utm_campaign, row.qr_id) == (None, None, None, None)


@pytest.mark.parametrize(
    ("value", "qr_id"),
    [
        ("6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ("%206f9619ff-8b86-d011-b42d-00c04fc964ff%20", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ("not-a-uuid", None),
        ("6f9619ff-8b86-d011-b42d", None),
        ("", None),
    ],
)
def test_hk_qr_must_be_a_uuid(pipeline: Pipeline, value: str, qr_id: str | None) -> None:
    row = stored(pipeline, url=f"https://mysite.example/?hk_qr={value}&hk_qr=6f9619ff-8b86-d011-b42d-00c04fc964f0")
    assert row.qr_id == qr_id


# --- referrer, language, sizes ---------------------------------------------------------------


def test_client_context_is_copied_and_referrer_host_normalised(pipeline: Pipeline) -> None:
    row = stored(
        pipeline,
        referrer="https://WWW.News.Example:443/story?id=1",
        language="de-CH",
        screen_width=1920,
        screen_height=1080,
        viewport_width=1280,
        viewport_height=720,
    )
    assert row.referrer == "https://WWW.News.Example:443/story?id=1"
    assert row.referrer_host == "news.example"
    assert row.language == "de-CH"
    assert (row.screen_width, row.screen_height, row.viewport_width, row.viewport_height) == (1920, 1080, 1280, 720)


def test_absent_client_context_leaves_empty_values(pipeline: Pipeline) -> None:
    row = stored(pipeline)
    assert (row.referrer, row.referrer_host, row.language) == ("", "", "")
    assert (row.screen_width, row.screen_height, row.viewport_width, row.viewport_height) == (0, 0, 0, 0)


def test_referrer_without_a_host_has_an_empty_host(pipeline: Pipeline) -> None:
    assert stored(pipeline, referrer="android-app://").referrer_host == ""
    assert stored(pipeline, referrer="not a url").referrer_host == ""


# --- geo ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ip", [geo.LONDON_IPV4, geo.MUNICH_IPV6])
def test_geo_and_network_from_the_databases(pipeline: Pipeline, ip: str) -> None:
    row, place = stored(pipeline, visitor_ip=ip), geo.PLACES[ip]
    assert (row.country, row.region_code, row.region_name, row.city) == (
        place.country,
        place.region_code,
        place.region_name,
        place.city,
    )
    assert (row.asn, row.provider) == (place.asn, place.provider)


@pytest.mark.parametrize("ip", [geo.PRIVATE_IPV4, geo.PRIVATE_IPV6, "127.0.0.1", "::1", "169.254.1.1", "fe80::1"])
def test_private_loopback_and_link_local_addresses_get_no_geo(pipeline: Pipeline, ip: str) -> None:
    row = stored(pipeline, visitor_ip=ip)
    assert (row.country, row.region_code, row.region_name, row.city, row.asn, row.provider) == ("", "", "", "", 0, "")


def test_address_in_no_database_gets_no_geo(pipeline: Pipeline) -> None:
    row = stored(pipeline, visitor_ip=geo.UNKNOWN_IPV4)
    assert (row.country, row.city, row.asn, row.provider) == ("", "", 0, "")


def test_missing_city_database_warns_once_and_leaves_its_fields_empty(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    pipeline = build_pipeline(dataclasses.replace(settings, geoip_city_db=tmp_path / "absent.mmdb"))
    rows = [stored(pipeline) for _ in range(3)]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "HITSTREAM_GEOIP_CITY_DB" in warnings[0].getMessage()
    assert {(row.country, row.city) for row in rows} == {("", "")}
    assert {row.asn for row in rows} == {geo.LONDON.asn}  # the ASN database still answers


def test_database_of_the_wrong_type_is_a_warning_not_a_crash(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    pipeline = build_pipeline(dataclasses.replace(settings, geoip_asn_db=settings.geoip_city_db))
    row = stored(pipeline)
    assert [r.getMessage() for r in caplog.records if "HITSTREAM_GEOIP_ASN_DB" in r.getMessage()]
    assert (row.country, row.asn) == (geo.LONDON.country, 0)


def test_unconfigured_databases_warn_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    pipeline = build_pipeline(Settings())
    stored(pipeline)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert any("HITSTREAM_GEOIP_CITY_DB" in m for m in messages)
    assert any("HITSTREAM_GEOIP_ASN_DB" in m for m in messages)


# --- exclusions -----------------------------------------------------------------------------


EXCLUSION_CASES = [
    # kind, rule value, envelope fields that match it, the path of an envelope that does not
    (ExclusionKind.CIDR, "81.2.69.0/24", {"visitor_ip": geo.LONDON_IPV4}),
    (ExclusionKind.CIDR, "2a02:d6c0::/32", {"visitor_ip": geo.MUNICH_IPV6}),
    (ExclusionKind.CIDR, "10.1.2.3", {"visitor_ip": geo.PRIVATE_IPV4}),
    (ExclusionKind.COUNTRY, "gb", {"visitor_ip": geo.LONDON_IPV4}),
    (ExclusionKind.COUNTRY, "DE", {"visitor_ip": geo.MUNICH_IPV6}),
    (ExclusionKind.USER_AGENT, "uptimerobot", {"user_agent": "Mozilla/5.0 (compatible; UptimeRobot/2.0)"}),
    (ExclusionKind.PATH, "/admin", {"url": "https://mysite.example/admin"}),
    (ExclusionKind.PATH, "/admin/", {"url": "https://mysite.example/admin/users?page=2"}),
    (ExclusionKind.PATH, "/admin", {"url": "https://mysite.example//admin/./x"}),
]
EXPECTED_REASON = {
    ("instance", ExclusionKind.CIDR): DropReason.INSTANCE_CIDR,
    ("instance", ExclusionKind.COUNTRY): DropReason.INSTANCE_COUNTRY,
    ("instance", ExclusionKind.USER_AGENT): DropReason.INSTANCE_USER_AGENT,
    ("instance", ExclusionKind.PATH): DropReason.INSTANCE_PATH,
    ("site", ExclusionKind.CIDR): DropReason.SITE_CIDR,
    ("site", ExclusionKind.COUNTRY): DropReason.SITE_COUNTRY,
    ("site", ExclusionKind.USER_AGENT): DropReason.SITE_USER_AGENT,
    ("site", ExclusionKind.PATH): DropReason.SITE_PATH,
}


@pytest.mark.parametrize("scope", ["instance", "site"])
@pytest.mark.parametrize(("kind", "value", "matching"), EXCLUSION_CASES)
def test_each_exclusion_kind_drops_with_its_scope_reason(
    pipeline: Pipeline, scope: str, kind: ExclusionKind, value: str, matching: dict[str, str]
) -> None:
    pipeline.update_exclusions([rule("instance" if scope == "instance" else SITE_ID, kind, value)])
    assert dropped(pipeline, **matching) == EXPECTED_REASON[(scope, kind)]
    # The same rule leaves other pageviews alone.
    stored(pipeline, visitor_ip=geo.UNKNOWN_IPV4, url="https://mysite.example/blog", user_agent=CHROME_WINDOWS)


@pytest.mark.parametrize("path", ["/administrator", "/adm", "/", "/blog/admin"])
def test_path_prefix_matches_whole_segments_only(pipeline: Pipeline, path: str) -> None:
    pipeline.update_exclusions([rule(SITE_ID, ExclusionKind.PATH, "/admin")])
    stored(pipeline, url=f"https://mysite.example{path}")


def test_site_rules_apply_only_to_their_site(pipeline: Pipeline) -> None:
    pipeline.update_exclusions([rule(OTHER_SITE_ID, ExclusionKind.CIDR, "81.2.69.0/24")])
    stored(pipeline, visitor_ip=geo.LONDON_IPV4)
    assert dropped(pipeline, site_id=OTHER_SITE_ID, visitor_ip=geo.LONDON_IPV4) == DropReason.SITE_CIDR


def test_instance_rules_are_checked_before_site_rules(pipeline: Pipeline) -> None:
    pipeline.update_exclusions(
        [rule(SITE_ID, ExclusionKind.CIDR, "81.2.69.0/24"), rule("instance", ExclusionKind.PATH, "/")]
    )
    assert dropped(pipeline) == DropReason.INSTANCE_PATH


def test_updating_exclusions_replaces_the_rule_set(pipeline: Pipeline) -> None:
    pipeline.update_exclusions([rule("instance", ExclusionKind.COUNTRY, "GB")])
    assert dropped(pipeline) == DropReason.INSTANCE_COUNTRY
    pipeline.update_exclusions([])
    stored(pipeline)


def test_an_unreadable_cidr_rule_is_skipped_and_the_others_still_apply(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    broken = dataclasses.replace(rule("instance", ExclusionKind.CIDR, "10.0.0.0/8"), value="10.0.0/x")
    pipeline.update_exclusions([broken, rule("instance", ExclusionKind.PATH, "/")])
    assert dropped(pipeline) == DropReason.INSTANCE_PATH
    assert broken.id in caplog.text


# --- spam -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop_file", "ip"),
    [
        ("drop.txt", "192.0.2.77"),
        ("drop.txt", "2001:db8:bad::9"),
        ("drop.json", "198.51.100.1"),
        ("drop.json", "2001:db8:dead:0:1::"),
    ],
)
def test_visitor_in_a_spamhaus_drop_network_is_dropped(
    settings: Settings, data_dir: Path, drop_file: str, ip: str
) -> None:
    pipeline = build_pipeline(dataclasses.replace(settings, spamhaus_drop_file=data_dir / drop_file))
    assert dropped(pipeline, visitor_ip=ip) == DropReason.SPAMHAUS_DROP
    stored(pipeline, visitor_ip="192.0.3.1")


def test_malformed_drop_file_is_an_error_naming_file_and_line(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "drop.txt"
    bad.write_text("; header\n192.0.2.0/24 ; SBL1\nnot-a-network ; SBL2\n")
    with pytest.raises(SpamListError, match=r"drop\.txt:3"):
        build_pipeline(dataclasses.replace(settings, spamhaus_drop_file=bad))


@pytest.mark.parametrize("referrer", ["https://spam.example/offer", "http://WWW.Spam.Example/"])
def test_referrer_on_the_spam_list_is_dropped(pipeline: Pipeline, referrer: str) -> None:
    assert dropped(pipeline, referrer=referrer) == DropReason.SPAM_REFERRER


@pytest.mark.parametrize(
    "referrer", ["https://mysite.example/", "https://blog.mysite.example/post", "https://sub.spam.example/"]
)
def test_own_site_and_unlisted_hosts_are_not_spam(pipeline: Pipeline, referrer: str) -> None:
    # mysite.example and blog.mysite.example are on the test list, but they are the site itself;
    # sub.spam.example is not listed (matching is exact).
    assert stored(pipeline, referrer=referrer).referrer_host


def test_the_bundled_referrer_spam_list_is_used_by_default(settings: Settings) -> None:
    bundled = Path(__file__).parents[1] / "workers" / "data" / "referrer-spammers.txt"
    listed = next(line.strip() for line in bundled.read_text().splitlines() if line.strip())
    pipeline = build_pipeline(dataclasses.replace(settings, referrer_spam_file=None))
    assert dropped(pipeline, referrer=f"https://{listed}/") == DropReason.SPAM_REFERRER


# --- user agent -----------------------------------------------------------------------------


BOTS = {
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl": "curl/8.4.0",
    "python-requests": "python-requests/2.31.0",
    "HeadlessChrome": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
    ),
    "wget": "Wget/1.21.4",
    "okhttp": "okhttp/4.12.0",
    "Go-http-client": "Go-http-client/1.1",
    "axios": "axios/1.6.7",
}


@pytest.mark.parametrize("user_agent", BOTS.values(), ids=BOTS.keys())
def test_bots_are_flagged_not_dropped(pipeline: Pipeline, user_agent: str) -> None:
    row = stored(pipeline, user_agent=user_agent)
    assert (row.is_bot, row.device_type) == (True, "bot")
    assert row.user_agent == user_agent


# People whose user agents contain a crawler-user-agents pattern that the crawler table ignores
# because it also matches people (shared/crawlers/data/identities.json, "ignored_patterns").
PEOPLE_NAMED_LIKE_CRAWLERS = {
    "ViewSonic phone": (
        "Mozilla/5.0 (Linux; Android 4.4.2; ViewSonic V500 Build/KVT49L) AppleWebKit/537.36 Chrome/18.0 Mobile",
        "tablet",
    ),
    "HTC Butterfly": (
        "Mozilla/5.0 (Linux; Android 4.2.2; HTC Butterfly Build/JDQ39) AppleWebKit/537.36 Chrome/31.0 Mobile",
        "tablet",
    ),
    "WhatsApp app": ("WhatsApp/2.17.427 Android/7.0 Device/motorola-Moto_C_Plus", "tablet"),
    "Instagram in-app browser": (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/AP3A.240617.008; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/126.0.6478.122 Mobile Safari/537.36 Instagram 339.0.0.36.106 Android",
        "mobile",
    ),
    "Fever_Plus phone": (
        "Mozilla/5.0 (Linux; Android 12; Fever_Plus) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
        "Mobile Safari/537.36",
        "mobile",
    ),
}


@pytest.mark.parametrize(
    ("user_agent", "device_type"), PEOPLE_NAMED_LIKE_CRAWLERS.values(), ids=PEOPLE_NAMED_LIKE_CRAWLERS.keys()
)
def test_people_whose_user_agent_resembles_a_crawler_pattern_are_counted_as_people(
    pipeline: Pipeline, user_agent: str, device_type: str
) -> None:
    result = pipeline.process(envelope(user_agent=user_agent))
    assert isinstance(result, tuple) and len(result) == 1  # no crawler hit beside the row
    assert (result[0].is_bot, result[0].device_type) == (False, device_type)


@pytest.mark.parametrize(
    ("user_agent", "device_type"),
    [
        (CHROME_WINDOWS, "desktop"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Safari/605.1.15",
            "desktop",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Mobile/15E148 Safari/604.1",
            "mobile",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Mobile Safari/537.36",
            "mobile",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/16.6 Mobile/15E148 Safari/604.1",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36",
            "tablet",
        ),
        ("SomeSmartFridge", "other"),
    ],
)
def test_device_types(pipeline: Pipeline, user_agent: str, device_type: str) -> None:
    row = stored(pipeline, user_agent=user_agent)
    assert (row.device_type, row.is_bot) == (device_type, False)


def test_browser_and_os_with_versions(pipeline: Pipeline) -> None:
    row = stored(pipeline)
    assert (row.browser, row.browser_version, row.os, row.os_version) == ("Chrome", "124", "Windows", "10")
    assert row.user_agent == CHROME_WINDOWS


def test_user_agent_cache_is_bounded() -> None:
    parser = UserAgentParser(cache_size=2)
    for user_agent in [*BOTS.values(), CHROME_WINDOWS]:
        parser.parse(user_agent)
    assert parser.parse.cache_info().currsize == 2
    assert parser.parse(CHROME_WINDOWS) is parser.parse(CHROME_WINDOWS)


_PARSES_WITHOUT_THE_LEGACY_PARSER = """
import sys
from workers.pipeline.user_agent import UserAgentParser
details = UserAgentParser().parse(sys.argv[1])
print(details.browser, details.device_type, "ua_parser_builtins.regexes" in sys.modules)
"""


def test_a_worker_parses_user_agents_without_compiling_the_legacy_parsers_regexes(commands: Commands) -> None:
    # In a fresh process: this one may have imported the legacy parser for another test.
    output = commands.run(
        [sys.executable, "-c", _PARSES_WITHOUT_THE_LEGACY_PARSER, CHROME_WINDOWS],
        capture_output=True,
        text=True,
        check=True,
    )
    assert output.stdout.split() == ["Chrome", "desktop", "False"]


# --- events ---------------------------------------------------------------------------------


def event(**overrides: object) -> dict[str, object]:
    return {"kind": "event", "event_name": "signup", **overrides}


def test_a_pageview_envelope_becomes_a_pageview_row_not_an_event(pipeline: Pipeline) -> None:
    assert type(stored(pipeline)) is PageviewRow


def test_an_event_gets_the_pageview_enrichment_plus_its_name_and_properties(pipeline: Pipeline) -> None:
    row = stored(
        pipeline,
        **event(event_properties={"plan": "pro", "seats": 3, "price": 9.5, "trial": True, "annual": False}),
        url="https://mysite.example/pricing?utm_source=newsletter",
        referrer="https://www.news.example/story",
    )
    assert isinstance(row, EventRow)
    assert (row.name, row.properties) == (
        "signup",
        {"plan": "pro", "seats": "3", "price": "9.5", "trial": "true", "annual": "false"},
    )
    assert (row.site_id, row.timestamp, row.path, row.utm_source, row.referrer_host) == (
        SITE_ID,
        PAGE_TIME,
        "/pricing",
        "newsletter",
        "news.example",
    )
    assert (row.country, row.city, row.asn, row.browser, row.device_type) == (
        "GB",
        "London",
        geo.LONDON.asn,
        "Chrome",
        "desktop",
    )


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (-12, "-12"), (0.1, "0.1"), (1e20, "1e+20"), (True, "true"), ("", "")]
)
def test_event_property_values_are_stored_as_their_json_text(pipeline: Pipeline, value: object, text: str) -> None:
    row = stored(pipeline, **event(event_properties={"value": value}))
    assert isinstance(row, EventRow)
    assert row.properties == {"value": text}


def test_an_event_without_properties_has_an_empty_map(pipeline: Pipeline) -> None:
    row = stored(pipeline, **event())
    assert isinstance(row, EventRow)
    assert row.properties == {}


@pytest.mark.parametrize(
    ("rules", "overrides", "reason"),
    [
        (
            [rule("instance", ExclusionKind.PATH, "/checkout")],
            {"url": "https://mysite.example/checkout/pay"},
            DropReason.INSTANCE_PATH,
        ),
        ([rule(SITE_ID, ExclusionKind.COUNTRY, "GB")], {}, DropReason.SITE_COUNTRY),
        ([], {"referrer": "https://spam.example/"}, DropReason.SPAM_REFERRER),
    ],
)
def test_events_are_dropped_by_the_same_rules_as_pageviews(
    pipeline: Pipeline, rules: list[ExclusionRule], overrides: dict[str, str], reason: DropReason
) -> None:
    pipeline.update_exclusions(rules)
    assert dropped(pipeline, **event(), **overrides) == reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_name": None}, "event_name"),
        ({"event_name": ""}, "event_name"),
        ({"event_properties": {"nested": {"a": 1}}}, "event_properties['nested']"),
        ({"event_properties": {"list": [1, 2]}}, "event_properties['list']"),
        ({"kind": "click"}, "kind"),
    ],
)
def test_a_malformed_event_envelope_is_a_step_failure_naming_the_field(
    pipeline: Pipeline, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(StepFailed) as failure:
        pipeline.process(envelope(**{**event(), **overrides}))
    assert failure.value.step == "envelope"
    assert field in failure.value.cause


# --- the raw IP and failures -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pageview", "event"])
@pytest.mark.parametrize("ip", [geo.LONDON_IPV4, geo.MUNICH_IPV6])
def test_the_finished_row_never_contains_the_visitor_ip(pipeline: Pipeline, ip: str, kind: str) -> None:
    row = stored(
        pipeline,
        visitor_ip=ip,
        referrer="https://news.example/",
        language="en",
        kind=kind,
        event_name="signup" if kind == "event" else None,
    )
    assert not {"ip", "visitor_ip"} & {*PAGEVIEW_COLUMNS, *EVENT_COLUMNS}
    assert not [value for value in dataclasses.astuple(row) if ip in str(value)]
    assert row.country  # the IP was used before it was dropped


def test_a_requeued_envelope_without_ip_is_still_stored(pipeline: Pipeline) -> None:
    pipeline.update_exclusions([rule("instance", ExclusionKind.CIDR, "0.0.0.0/0")])
    row = stored(pipeline, visitor_ip=None)
    assert (row.country, row.asn) == ("", 0)


def test_a_broken_step_raises_step_failed_naming_it(pipeline: Pipeline) -> None:
    with pytest.raises(StepFailed) as failure:
        pipeline.process(envelope(url="https://[::1/"))
    assert failure.value.step == "url"
    assert "url" in str(failure.value)


def test_step_failed_never_carries_the_visitor_ip(pipeline: Pipeline) -> None:
    bad_ip = "81.2.69.160.7"
    with pytest.raises(StepFailed) as failure:
        pipeline.process(envelope(visitor_ip=bad_ip))
    assert failure.value.step == "envelope"
    assert "ValueError" in failure.value.cause
    assert bad_ip not in "".join(traceback.format_exception(failure.value))
