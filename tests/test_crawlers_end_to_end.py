"""Crawler analytics end to end, through real ``hitstream api``, ``hitstream worker`` and
``hitstream stats`` processes into a chdb store: the issue's five requests (one human, four
crawlers, one of them spoofed) give one human pageview and four judged crawler hits; AI
fetches dropped by exclusions or the spam filter are answered 202 and store nothing; an access
log with bots replayed through ``hitstream replay`` gives humans and crawlers apart.
Stores are read after the worker exits (one process per chdb path)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from shared.control.exclusions import ExclusionKind, add_exclusion
from shared.control.sites import site_for_domain
from tests.procs import HITSTREAM, Processes, drained, query_store, wait_until
from tests.traffic import ingest_token

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CLAUDEBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)"
BYTESPIDER = "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)"
HUMAN_IP = "203.0.113.9"
OPENAI_GPTBOT_IP = "132.196.86.7"  # in OpenAI's published GPTBot ranges
GOOGLEBOT_IP = "192.178.4.9"  # in Google's published Googlebot ranges
ELSEWHERE_IP = "198.18.0.20"  # nobody's crawler range
ADDRESSES = (HUMAN_IP, OPENAI_GPTBOT_IP, GOOGLEBOT_IP, ELSEWHERE_IP)


def drain(client: redis.Redis, processes: Processes, store: Path, worker_processes: int = 1, **settings: str) -> None:
    """Run a worker (with 2 or more processes: enrichers and the store writer) until both lanes
    are empty, then stop it so the store can be read."""
    worker = processes.worker(store, processes=worker_processes, **settings)
    wait_until(lambda: drained(client), 60, "the worker to empty the lanes", interval=0.1)
    assert worker.stop() == 0


def stats(hitstream_env: dict[str, str], *options: str) -> dict[str, Any]:
    finished = subprocess.run(
        [HITSTREAM, "stats", "--site", "example.com", "--json", *options],
        env=hitstream_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    report: dict[str, Any] = orjson.loads(finished.stdout)
    return report


def crawlers_by_name(report: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {
        entry["value"]: (entry["hits"], entry["verified"], entry["spoofed"], entry["unverifiable"])
        for entry in report["crawlers"]["crawlers"]
    }


def store_of(hitstream_env: dict[str, str]) -> Path:
    return Path(hitstream_env["HITSTREAM_CLICKHOUSE_URL"].removeprefix("chdb://"))


@pytest.mark.parametrize("worker_processes", [1, 2], ids=["one-process", "enrichers-and-writer"])
def test_one_human_and_four_crawler_pageviews_give_one_human_pageview_and_four_judged_crawler_hits(
    processes: Processes, real_redis: redis.Redis, hitstream_env: dict[str, str], worker_processes: int
) -> None:
    headers = {"Authorization": f"Bearer {ingest_token(real_redis)}"}
    api = processes.api()
    sent = [
        (FIREFOX, HUMAN_IP, "/"),
        (GPTBOT, OPENAI_GPTBOT_IP, "/docs"),
        (GPTBOT, ELSEWHERE_IP, "/docs"),
        (GOOGLEBOT, GOOGLEBOT_IP, "/"),
        (CLAUDEBOT, ELSEWHERE_IP, "/pricing"),
    ]
    for user_agent, visitor_ip, path in sent:
        body = {
            "url": f"https://example.com{path}",
            "timestamp": "2026-04-15T12:00:00Z",
            "visitor_ip": visitor_ip,
            "user_agent": user_agent,
        }
        answer = httpx.post(f"{api.url}/api/ingest/server/pageview", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
    store = store_of(hitstream_env)
    drain(real_redis, processes, store, worker_processes)

    human = stats(hitstream_env)
    assert (human["traffic"], human["pageviews"], human["visitors"]) == ("human", 1, 1)
    assert [item["value"] for item in human["browsers"]] == ["Firefox"]
    assert [item["value"] for item in human["devices"]] == ["desktop"]
    assert human["crawlers"]["hits"] == 4
    assert human["crawlers"]["verdicts"] == {"verified": 2, "spoofed": 1, "unverifiable": 1}
    assert crawlers_by_name(human) == {
        "GPTBot": (2, 1, 1, 0),
        "Googlebot": (1, 1, 0, 0),
        "ClaudeBot": (1, 0, 0, 1),
    }
    gptbot = next(entry for entry in human["crawlers"]["crawlers"] if entry["value"] == "GPTBot")
    assert (gptbot["operator"], gptbot["purpose"], gptbot["top_paths"]) == (
        "OpenAI",
        "ai_training",
        [{"value": "/docs", "hits": 2}],
    )
    everything = stats(hitstream_env, "--all-traffic")
    assert (everything["traffic"], everything["pageviews"]) == ("all", 5)
    assert {item["value"] for item in everything["browsers"]} >= {"Firefox", "GPTBot", "Googlebot", "ClaudeBot"}

    rows = query_store(store, "SELECT * FROM crawler_hits")
    assert len(rows) == 4
    assert not [address for address in ADDRESSES if address in orjson.dumps(rows).decode()]
    assert query_store(store, "SELECT count() FROM pageviews WHERE is_bot") == [[4]]


def test_ai_fetches_are_stored_as_judged_crawler_hits_and_exclusions_and_spam_answer_202_storing_nothing(
    processes: Processes, real_redis: redis.Redis, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    headers = {"X-API-Key": ingest_token(real_redis)}
    site = site_for_domain(real_redis, "example.com")
    assert site is not None
    add_exclusion(real_redis, site.id, ExclusionKind.PATH, "/private")
    add_exclusion(real_redis, site.id, ExclusionKind.USER_AGENT, "bytespider")
    add_exclusion(real_redis, site.id, ExclusionKind.CIDR, "192.0.2.0/24")
    drop_list = tmp_path / "drop.txt"
    drop_list.write_text("198.51.100.0/24 ; SBL000042\n")
    api = processes.api()
    single = f"{api.url}/api/sites/{site.id}/ingest/ai-fetch"
    batch = f"{api.url}/api/sites/{site.id}/ingest/ai-fetches"
    kept = {
        "path": "/guides/ai.pdf?from=bot",
        "hostname": "docs.example.com",
        "status_code": 200,
        "content_type": "application/pdf",
        "response_ms": 184,
        "bytes_served": 4096,
        "user_agent": GPTBOT,
        "timestamp": "2026-04-15T12:00:00Z",
        "visitor_ip": OPENAI_GPTBOT_IP,
    }
    fetch_id = str(uuid.uuid4())
    singles = [
        kept,
        {"path": "/private/report", "status_code": 200, "user_agent": GPTBOT},  # site path rule
        {"path": "/docs", "status_code": 200, "user_agent": BYTESPIDER},  # site user-agent rule
        {"path": "/docs", "status_code": 200, "user_agent": GPTBOT, "visitor_ip": "192.0.2.7"},  # site CIDR
        {"path": "/docs", "status_code": 200, "user_agent": GPTBOT, "visitor_ip": "198.51.100.9"},  # Spamhaus
        {"path": "/again", "status_code": 304, "user_agent": GOOGLEBOT, "fetch_id": fetch_id},
        {"path": "/again", "status_code": 304, "user_agent": GOOGLEBOT, "fetch_id": fetch_id},  # a retry
    ]
    for body in singles:
        answer = httpx.post(single, json=body, headers=headers)
        assert (answer.status_code, answer.content) == (202, b""), answer.text
    items = [
        {"path": "/a", "status_code": 404, "user_agent": CLAUDEBOT, "timestamp": "2026-04-14T08:30:00Z"},
        {
            "path": "/b",
            "status_code": 200,
            "user_agent": GOOGLEBOT,
            "visitor_ip": ELSEWHERE_IP,
            "content_type": "image/png",
        },
    ]
    answer = httpx.post(batch, json=items, headers=headers)
    assert (answer.status_code, answer.json()) == (202, {"accepted": 2, "rejected": []})
    store = store_of(hitstream_env)
    drain(real_redis, processes, store, HITSTREAM_SPAMHAUS_DROP_FILE=str(drop_list))

    rows = query_store(
        store,
        "SELECT source, crawler, operator, verdict, hostname, path, query, status_code, resource_type, content_type,"
        " response_ms, bytes_served, toString(timestamp) FROM crawler_hits ORDER BY path",
    )
    assert [row[:12] for row in rows] == [
        ["ai_fetch", "ClaudeBot", "Anthropic", "unverifiable", "", "/a", "", 404, "html", "", 0, 0],
        ["ai_fetch", "Googlebot", "Google", "unverifiable", "", "/again", "", 304, "html", "", 0, 0],
        ["ai_fetch", "Googlebot", "Google", "spoofed", "", "/b", "", 200, "image", "image/png", 0, 0],
        [
            "ai_fetch",
            "GPTBot",
            "OpenAI",
            "verified",
            "docs.example.com",
            "/guides/ai.pdf",
            "from=bot",
            200,
            "document",
            "application/pdf",
            184,
            4096,
        ],
    ]
    times = {row[5]: row[12] for row in rows}
    assert (times["/a"], times["/guides/ai.pdf"]) == ("2026-04-14 08:30:00.000", "2026-04-15 12:00:00.000")
    assert query_store(store, "SELECT toString(hit_id) FROM crawler_hits WHERE path = '/again'") == [[fetch_id]]
    drops = dict(query_store(store, "SELECT reason, toUInt64(sum(count)) FROM drop_counts GROUP BY reason"))
    assert drops == {"site_path": 1, "site_user_agent": 1, "site_cidr": 1, "spamhaus_drop": 1}
    assert query_store(store, "SELECT count() FROM pageviews") == [[0]]  # an AI fetch is never a pageview
    assert not [address for address in ADDRESSES if address in orjson.dumps(rows).decode()]


def test_an_access_log_with_bots_replays_into_human_pageviews_and_judged_crawler_hits(
    processes: Processes, real_redis: redis.Redis, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    secret = ingest_token(real_redis, bulk=True)
    api = processes.api()
    log = tmp_path / "access.log"
    lines = [
        (HUMAN_IP, "10:00:00", "/pricing", FIREFOX),
        (OPENAI_GPTBOT_IP, "10:01:00", "/docs", GPTBOT),
        (ELSEWHERE_IP, "10:02:00", "/docs", GPTBOT),
        (GOOGLEBOT_IP, "10:03:00", "/", GOOGLEBOT),
        (ELSEWHERE_IP, "10:04:00", "/feed", "curl/8.5.0"),
        (HUMAN_IP, "10:05:00", "/blog", FIREFOX),
        (GOOGLEBOT_IP, "10:06:00", "/logo.png", GOOGLEBOT),  # an asset: the replay skips it
    ]
    log.write_text(
        "".join(
            f'{ip} - - [10/Oct/2025:{at} +0000] "GET {path} HTTP/1.1" 200 512 "-" "{ua}"\n'
            for ip, at, path, ua in lines
        )
    )
    finished = subprocess.run(
        [HITSTREAM, "replay", "--format", "combined", str(log), "--site-url", "https://example.com"]
        + ["--url", api.url, "--quiet", "--sessions"],
        env={**hitstream_env, "HITSTREAM_TOKEN": secret},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    assert "accepted: 6" in finished.stdout
    drain(real_redis, processes, store_of(hitstream_env))

    report = stats(hitstream_env, "--from", "2025-10-10", "--to", "2025-10-10")
    assert (report["pageviews"], report["visitors"]) == (2, 1)
    assert sorted(item["value"] for item in report["pages"]) == ["/blog", "/pricing"]
    assert report["crawlers"]["hits"] == 4
    assert report["crawlers"]["verdicts"] == {"verified": 2, "spoofed": 1, "unverifiable": 1}
    assert crawlers_by_name(report) == {"GPTBot": (2, 1, 1, 0), "Googlebot": (1, 1, 0, 0), "curl": (1, 0, 0, 1)}
    assert [(item["value"], item["hits"]) for item in report["crawlers"]["purposes"]] == [
        ("ai_training", 2),
        ("search", 1),
        ("tool", 1),
    ]
    assert stats(hitstream_env, "--all-traffic")["pageviews"] == 6
