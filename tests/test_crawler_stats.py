"""Human figures count humans, and crawlers have their own section: pageview and event figures
leave bot rows out unless ``all_traffic`` (``--all-traffic``); the crawler section counts hits
by crawler (with operator, purpose, verdicts, top paths), operator, purpose and resource type,
over time, in the JSON document, the text report and its chart, through the worker too."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import orjson
import redis
from click.testing import CliRunner

from hitstream.main import cli
from shared.control.sites import add_site
from tests.store_owner import answering, owned
from tests.stores import event, pageview, query, utc
from tests.worker_context import worker_context_for
from workers.records import CrawlerHitRow
from workers.stats_reader import read_site_stats
from workers.store.store import Store, open_store


def hit(site_id: str, day: int, crawler: str, verdict: str, path: str = "/", **fields: Any) -> CrawlerHitRow:
    known = {
        "GPTBot": ("OpenAI", "ai_training", True),
        "Googlebot": ("Google", "search", False),
        "ClaudeBot": ("Anthropic", "ai_training", True),
        "": ("", "", False),
    }
    operator, purpose, ai = known[crawler]
    at = utc(2024, 3, day, 12)
    return CrawlerHitRow(
        site_id, at, at, str(uuid.uuid4()), fields.pop("source", "pageview"), crawler, operator, purpose, ai, verdict,
        path=path, **fields,
    )  # fmt: skip


def fill(store: Store, site_id: str) -> None:
    """2 human pageviews (Firefox, one visitor) and a human signup; 3 bot pageviews (the
    crawlers' own, as the pipeline stores them) and a bot's signup; 7 crawler hits on 1 and 3
    March; another site's hit."""
    human = str(uuid.uuid4())
    firefox = {"browser": "Firefox", "device_type": "desktop", "session_id": human}
    pages = [
        pageview(site_id, utc(2024, 3, 1, 9), path="/", **firefox),
        pageview(site_id, utc(2024, 3, 1, 9, 1), path="/pricing", **firefox),
        pageview(site_id, utc(2024, 3, 1, 10), path="/", browser="GPTBot", device_type="bot", is_bot=True),
        pageview(site_id, utc(2024, 3, 1, 11), path="/", browser="Googlebot", device_type="bot", is_bot=True),
        pageview(site_id, utc(2024, 3, 3, 11), path="/a", browser="ClaudeBot", device_type="bot", is_bot=True),
        event(site_id, utc(2024, 3, 1, 9, 2), "signup", {}, session_id=human),
        event(site_id, utc(2024, 3, 1, 10, 1), "signup", {}, is_bot=True),
    ]
    hits = [
        hit(site_id, 1, "GPTBot", "verified", "/"),
        hit(site_id, 1, "GPTBot", "spoofed", "/"),
        hit(site_id, 1, "GPTBot", "verified", "/pricing"),
        hit(site_id, 1, "Googlebot", "verified", "/"),
        hit(site_id, 3, "ClaudeBot", "unverifiable", "/a"),
        hit(site_id, 3, "ClaudeBot", "unverifiable", "/paper.pdf", source="ai_fetch", resource_type="document"),
        hit(site_id, 3, "", "unverifiable", "/gone", source="ai_fetch", resource_type="html"),
        hit(str(uuid.uuid4()), 1, "GPTBot", "verified", "/elsewhere"),
    ]
    for row in hits:
        row.resource_type = row.resource_type or "html"
    store.write_batch("b:crawlers", [*pages, *hits], [])


def top(report: dict[str, Any], key: str, count: str = "pageviews") -> list[tuple[str, int]]:
    return [(item["value"], item[count]) for item in report[key]]


def test_crawler_hits_are_stored_in_their_own_table(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    rows = query(
        store,
        "SELECT crawler, verdict, source, path, resource_type FROM crawler_hits"
        " WHERE site_id = {site:UUID} ORDER BY timestamp, path, crawler, verdict",
        site=site_id,
    )
    assert rows == [
        ("GPTBot", "spoofed", "pageview", "/", "html"),
        ("GPTBot", "verified", "pageview", "/", "html"),
        ("Googlebot", "verified", "pageview", "/", "html"),
        ("GPTBot", "verified", "pageview", "/pricing", "html"),
        ("ClaudeBot", "unverifiable", "pageview", "/a", "html"),
        ("", "unverifiable", "ai_fetch", "/gone", "html"),
        ("ClaudeBot", "unverifiable", "ai_fetch", "/paper.pdf", "document"),
    ]


def test_a_batch_of_crawler_hits_retried_is_stored_once(store: Store) -> None:
    site_id = str(uuid.uuid4())
    hits = [hit(site_id, 1, "GPTBot", "verified"), hit(site_id, 2, "Googlebot", "spoofed")]
    for _ in range(2):
        assert not store.write_batch("b:hits-retried", hits, [])
    store.write_batch("b:hits-other", hits, [])
    ((count,),) = query(store, "SELECT count() FROM crawler_hits WHERE site_id = {site:UUID}", site=site_id)
    assert count == 4


def test_human_figures_leave_bots_out_by_default(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    report = store.site_stats(site_id, None, None)
    assert report["traffic"] == "human"
    assert (report["pageviews"], report["visitors"]) == (2, 1)
    assert top(report, "browsers") == [("Firefox", 2)]
    assert top(report, "devices") == [("desktop", 2)]
    assert top(report, "pages") == [("/", 1), ("/pricing", 1)]
    assert top(report, "events") == [("signup", 1)]
    assert report["pageviews_over_time"]["points"] == [["2024-03-01T09:00", 2]]


def test_all_traffic_counts_bots_too(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    report = store.site_stats(site_id, None, None, all_traffic=True)
    assert report["traffic"] == "all"
    assert (report["pageviews"], report["visitors"]) == (5, 4)
    assert top(report, "browsers") == [("Firefox", 2), ("ClaudeBot", 1), ("GPTBot", 1), ("Googlebot", 1)]
    assert top(report, "devices") == [("bot", 3), ("desktop", 2)]
    assert top(report, "events") == [("signup", 2)]
    assert sum(count for _, count in report["pageviews_over_time"]["points"]) == 5


def test_the_crawler_section_counts_hits_by_crawler_verdict_path_operator_purpose_and_type(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    for all_traffic in (False, True):  # crawlers are never humans: the section is the same
        crawlers = store.site_stats(site_id, None, None, all_traffic=all_traffic)["crawlers"]
        assert crawlers["hits"] == 7
        assert crawlers["verdicts"] == {"verified": 3, "spoofed": 1, "unverifiable": 3}
        assert crawlers["crawlers"] == [
            {
                "value": "GPTBot",
                "operator": "OpenAI",
                "purpose": "ai_training",
                "ai": True,
                "hits": 3,
                "verified": 2,
                "spoofed": 1,
                "unverifiable": 0,
                "top_paths": [{"value": "/", "hits": 2}, {"value": "/pricing", "hits": 1}],
            },
            {
                "value": "ClaudeBot",
                "operator": "Anthropic",
                "purpose": "ai_training",
                "ai": True,
                "hits": 2,
                "verified": 0,
                "spoofed": 0,
                "unverifiable": 2,
                "top_paths": [{"value": "/a", "hits": 1}, {"value": "/paper.pdf", "hits": 1}],
            },
            {
                "value": "Googlebot",
                "operator": "Google",
                "purpose": "search",
                "ai": False,
                "hits": 1,
                "verified": 1,
                "spoofed": 0,
                "unverifiable": 0,
                "top_paths": [{"value": "/", "hits": 1}],
            },
        ]
        assert top(crawlers, "operators", "hits") == [("OpenAI", 3), ("Anthropic", 2), ("Google", 1)]
        assert top(crawlers, "purposes", "hits") == [("ai_training", 5), ("search", 1)]
        assert top(crawlers, "resource_types", "hits") == [("html", 6), ("document", 1)]
        over_time = crawlers["hits_over_time"]
        assert (over_time["unit"], over_time["points"]) == (
            "hour",
            [[f"2024-03-{day:02d}T{hour:02d}:00", 4 if (day, hour) == (1, 12) else 3 if (day, hour) == (3, 12) else 0]
             for day in (1, 2, 3) for hour in range(24) if (1, 12) <= (day, hour) <= (3, 12)],
        )  # fmt: skip


def test_the_crawler_section_follows_the_dates_and_the_limit(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    first_day = store.site_stats(site_id, date(2024, 3, 1), date(2024, 3, 1), limit=1)["crawlers"]
    assert (first_day["hits"], first_day["verdicts"]) == (4, {"verified": 3, "spoofed": 1, "unverifiable": 0})
    ((gptbot,),) = [[entry["value"] for entry in first_day["crawlers"]]]
    assert gptbot == "GPTBot"
    assert first_day["crawlers"][0]["top_paths"] == [{"value": "/", "hits": 2}]
    assert all(len(first_day[key]) == 1 for key in ("operators", "purposes", "resource_types"))
    nothing = store.site_stats(str(uuid.uuid4()), None, None)["crawlers"]
    assert nothing == {
        "hits": 0,
        "verdicts": {"verified": 0, "spoofed": 0, "unverifiable": 0},
        "crawlers": [],
        "operators": [],
        "purposes": [],
        "resource_types": [],
        "hits_over_time": {"unit": "hour", "points": []},
    }


def stored_site(real_redis: redis.Redis, store_dsn: str) -> str:
    site = add_site(real_redis, "crawled.example.com")
    opened = open_store(store_dsn)
    try:
        opened.migrate()
        fill(opened, site.id)
    finally:
        opened.close()
    return site.id


def test_stats_command_json_counts_humans_unless_all_traffic(
    hitstream_env: dict[str, str], real_redis: redis.Redis
) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    human = CliRunner().invoke(cli, ["stats", "--site", "crawled.example.com", "--json"])
    assert human.exit_code == 0, human.output
    report = orjson.loads(human.stdout)
    assert (report["traffic"], report["pageviews"], top(report, "browsers")) == ("human", 2, [("Firefox", 2)])
    assert report["crawlers"]["hits"] == 7
    everything = CliRunner().invoke(cli, ["stats", "--site", "crawled.example.com", "--all-traffic", "--json"])
    assert everything.exit_code == 0, everything.output
    report = orjson.loads(everything.stdout)
    assert (report["traffic"], report["pageviews"], report["crawlers"]["hits"]) == ("all", 5, 7)


def test_stats_command_text_has_the_crawler_section_and_its_chart(
    hitstream_env: dict[str, str], real_redis: redis.Redis
) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    result = CliRunner().invoke(cli, ["stats", "--site", "crawled.example.com"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["Traffic", "humans", "only;", "--all-traffic", "counts", "bots", "too"] in lines
    assert ["Pageviews", "2"] in lines
    assert ["Crawler", "hits", "per", "hour"] in lines
    assert ["Crawler", "hits", "7", "(verified", "3,", "spoofed", "1,", "unverifiable", "3)"] in lines
    header = ["Crawler", "Operator", "Purpose", "Hits", "Verified", "Spoofed", "Unverifiable"]
    assert lines[lines.index(header) + 1 : lines.index(header) + 4] == [
        ["GPTBot", "OpenAI", "ai_training", "3", "2", "1", "0"],
        ["ClaudeBot", "Anthropic", "ai_training", "2", "0", "0", "2"],
        ["Googlebot", "Google", "search", "1", "1", "0", "0"],
    ]
    top_paths = lines.index(["Top", "paths", "of", "GPTBot", "Hits"])
    assert lines[top_paths + 1 : top_paths + 3] == [["/", "2"], ["/pricing", "1"]]
    for title, first in (("operators", ["OpenAI", "3"]), ("purposes", ["ai_training", "5"])):
        assert lines[lines.index(["Crawler", title, "Hits"]) + 1] == first
    assert lines[lines.index(["Resource", "types", "Hits"]) + 1 : lines.index(["Resource", "types", "Hits"]) + 3] == [
        ["html", "6"],
        ["document", "1"],
    ]
    browsers = lines.index(["Browsers", "Pageviews"])
    assert lines[browsers + 1 : browsers + 3] == [["Firefox", "2"], []]
    everything = CliRunner().invoke(cli, ["stats", "--site", "crawled.example.com", "--all-traffic"])
    assert ["Traffic", "all", "traffic,", "bots", "included"] in [
        line.split() for line in everything.output.splitlines()
    ]
    assert ["Pageviews", "5"] in [line.split() for line in everything.output.splitlines()]


def test_all_traffic_reaches_the_worker_that_owns_the_store(
    store: Store, store_dsn: str, real_redis: redis.Redis
) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    with owned(store_dsn), answering(worker_context_for(real_redis, store)):
        answers = [
            read_site_stats(store_dsn, real_redis, site_id, None, None, 10, budget=60, all_traffic=all_traffic)
            for all_traffic in (True, False)
        ]
    assert [(answer["traffic"], answer["pageviews"], answer["crawlers"]["hits"]) for answer in answers] == [
        ("all", 5, 7),
        ("human", 2, 7),
    ]
