"""Privacy scan, run after every other test (tests/conftest.py orders it last; .ci/run runs
it alone after the rest): no visitor IP and no token secret in any stored column, dead
letter, Redis key, log line or /metrics page.

It runs its own flow first at DEBUG log level, with a drop rule, a poison record (a dead
letter) and every distinctive visitor IP, then scans that flow's output and Redis keys
together with every log, metrics page and store the earlier tests registered in
``tests.procs.ARTIFACTS`` (in this process, or listed in $HITSTREAM_TEST_ARTIFACTS by the
pytest processes that ran them).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from shared import keys
from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, add_exclusion
from shared.envelope import Envelope
from tests.privacy import scan_files, scan_redis, scan_stores
from tests.procs import ARTIFACTS, Processes, query_store, wait_until
from tests.traffic import VISITOR_IPS, ingest_token, post_pageviews, queued_envelope

# A store of its own with one value in one column (positive control: the scan finds it).
_PLANT = """
import sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
client.command("CREATE TABLE planted (note String) ENGINE = MergeTree ORDER BY note")
client.insert("planted", [[sys.argv[2]]], column_names=["note"])
"""


def planted_store(store: Path, value: str) -> Path:
    subprocess.run([sys.executable, "-c", _PLANT, str(store), value], check=True, capture_output=True)
    return store


def poison(site_id: str) -> Envelope:
    """An envelope whose URL breaks the pipeline's url step: it becomes a dead letter."""
    return queued_envelope(site_id, "http://[::1/x", VISITOR_IPS[2])


def test_no_visitor_ip_or_token_anywhere_after_the_suite(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    secret = ingest_token(real_redis)
    site_id = real_redis.hget(keys.SITE_BY_DOMAIN, "example.com").decode()
    add_exclusion(real_redis, INSTANCE_SCOPE, ExclusionKind.CIDR, "203.0.113.0/24")  # drops one IP of four
    debug = {"HITSTREAM_LOG_LEVEL": "DEBUG"}
    api = processes.api(**debug)
    answers = asyncio.run(post_pageviews(api.url, secret, 400, concurrency=8))
    assert answers.summary() == {202: 400}
    # A crawler's pageview and an AI fetch: the worker judges their addresses, and stores no IP.
    crawler = {"Authorization": f"Bearer {secret}"}
    gptbot = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"
    pageview = {"url": "https://example.com/", "timestamp": "2026-04-15T12:00:00Z", "user_agent": gptbot}
    fetch = {"path": "/docs", "status_code": 200, "user_agent": gptbot}
    for path, body in (
        ("/api/ingest/server/pageview", {**pageview, "visitor_ip": VISITOR_IPS[0]}),
        (f"/api/sites/{site_id}/ingest/ai-fetch", {**fetch, "visitor_ip": VISITOR_IPS[2]}),
    ):
        assert httpx.post(f"{api.url}{path}", json=body, headers=crawler).status_code == 202
    real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: poison(site_id).to_json()})

    needles = [*VISITOR_IPS, secret]
    # Positive control: the scanner finds the IPs where they legitimately are, the queue.
    assert set(VISITOR_IPS) <= {
        finding.rsplit(": ", 1)[1] for finding in scan_redis(real_redis, needles, include_stream=True)
    }

    worker = processes.worker(tmp_path / "store", **debug)
    wait_until(lambda: real_redis.xlen(keys.STREAM) == 0, 60, "the worker to drain the queue", interval=0.1)
    api.metrics()
    assert worker.stop() == 0
    api.stop()  # uvicorn re-raises SIGTERM after its graceful shutdown: exit status -15
    assert real_redis.hlen(keys.DEAD_LETTERS) == 1
    assert query_store(tmp_path / "store", "SELECT source, verdict FROM crawler_hits ORDER BY source") == [
        ["ai_fetch", "spoofed"],
        ["pageview", "spoofed"],
    ]

    findings = scan_redis(real_redis, needles) + scan_files(ARTIFACTS.logs, needles)
    # Positive control: a store holding an IP, scanned last by its scanner, after others.
    planted = planted_store(tmp_path / "planted", VISITOR_IPS[1])
    findings += scan_stores([*ARTIFACTS.stores, planted], needles)
    print(
        f"\nprivacy scan: {len(ARTIFACTS.logs)} logs and metrics pages, {len(ARTIFACTS.stores)} stores, "
        f"{len(real_redis.keys())} Redis keys searched for {len(needles)} strings"
    )
    assert findings == [f"store {planted} table `default`.`planted`: {VISITOR_IPS[1]}"]
