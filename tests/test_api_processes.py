"""Real ``hitstream api`` processes (uvicorn) on free ports: shared rate budget, control-plane
changes seen by every process within the control cache's time, Redis outages (503 within the
Redis timeout, by the API's own measure), and a schemathesis run."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from shared.config import Settings
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token, hash_token, revoke_token
from tests.procs import START_SECONDS, Processes, wait_until
from tests.timing import late_bound

PATH = "/api/ingest/server/pageview"
BODY = {
    "url": "https://example.com/",
    "timestamp": "2026-04-15T12:00:00Z",
    "visitor_ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
}


def post(base: str, secret: str, body: dict[str, Any] = BODY) -> httpx.Response:
    return httpx.post(f"{base}{PATH}", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=5)


def answers(probe: Callable[[], int], wanted: int, within: float) -> None:
    """Until probe() returns the wanted status; fails after ``within`` seconds."""
    wait_until(lambda: probe() == wanted, within, f"the answer {wanted}", interval=0.1)


def handoff_seconds(base: str) -> tuple[float, float]:
    """The API's own count and sum of its hand-off calls' durations, failed ones included
    (``hitstream_api_handoff_seconds``): its timing, free of this test's scheduling."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    figures = dict(re.findall(r"^hitstream_api_handoff_seconds_(count|sum) (\S+)$", text, re.MULTILINE))
    return float(figures["count"]), float(figures["sum"])


@pytest.fixture
def owner(real_redis: redis.Redis) -> tuple[str, str, str]:
    """(secret, token id, site id) of a token that owns example.com."""
    site = add_site(real_redis, "example.com")
    secret, token = create_token(real_redis, "processes")
    grant(real_redis, token.id, site.id, "owner")
    return secret, token.id, site.id


def test_two_processes_share_one_rate_budget(processes: Processes, owner: tuple[str, str, str]) -> None:
    secret = owner[0]
    limits = {"HITSTREAM_RATE_LIMIT": "0.01", "HITSTREAM_RATE_BURST": "4"}
    first, second = processes.api(**limits).url, processes.api(**limits).url
    statuses = [post(base, secret).status_code for base in (first, second, first, second, first, second)]
    assert statuses == [202, 202, 202, 202, 429, 429]


def test_revocation_grant_change_and_expiry_reach_every_process_within_the_control_cache_time(
    processes: Processes, owner: tuple[str, str, str], real_redis: redis.Redis
) -> None:
    secret, token_id, site_id = owner
    expiring_secret, expiring = create_token(real_redis, "expiring", expires_in_days=1)
    grant(real_redis, expiring.id, site_id, "admin")
    first, second = processes.api().url, processes.api().url
    for base in (first, second):  # both processes now hold everything in their caches
        assert post(base, secret).status_code == 202
        assert post(base, expiring_secret).status_code == 202

    cache_time = late_bound(Settings.control_cache_seconds)
    grant(real_redis, token_id, site_id, "viewer")
    answers(lambda: post(second, secret).status_code, 403, within=cache_time)
    revoke_token(real_redis, token_id)
    answers(lambda: post(first, secret).status_code, 401, within=cache_time)

    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat(timespec="milliseconds")
    real_redis.hset(keys.TOKEN.format(token_hash=hash_token(expiring_secret)), "expires_at", soon)
    answers(lambda: post(second, expiring_secret).status_code, 401, within=1 + cache_time)


TIMEOUT_MS = 250


@dataclass
class OwnRedis:
    """A Redis server of this test's own (it is stopped and frozen), with an owner token."""

    server: RedisServer
    control: redis.Redis
    secret: str
    settings: dict[str, str]  # for an API process on it


@pytest.fixture
def own_redis(own_redis: RedisServer) -> OwnRedis:
    """tests/conftest.py's own Redis, with a site and an owner token."""
    control = redis.Redis.from_url(own_redis.url)
    site = add_site(control, "example.com")
    secret, token = create_token(control, "outage")
    grant(control, token.id, site.id, "owner")
    settings = {"HITSTREAM_REDIS_URL": own_redis.url, "HITSTREAM_REDIS_TIMEOUT_MS": str(TIMEOUT_MS)}
    return OwnRedis(own_redis, control, secret, settings)


def test_redis_outage_answers_503_within_the_timeout_and_recovers(processes: Processes, own_redis: OwnRedis) -> None:
    server, secret = own_redis.server, own_redis.secret
    base = processes.api(**own_redis.settings).url
    assert post(base, secret).status_code == 202
    server.stop()
    calls, took = handoff_seconds(base)
    refused = post(base, secret)
    assert refused.status_code == 503
    assert refused.json() == {"message": "Service not available"}
    assert refused.headers["Retry-After"] == "1"
    assert handoff_seconds(base)[0] == calls + 1
    assert handoff_seconds(base)[1] - took < late_bound(TIMEOUT_MS / 1000)
    assert httpx.get(f"{base}/readyz").status_code == 503
    assert httpx.get(f"{base}/healthz").status_code == 200

    server.start()  # same port and AOF: the accepted pageview is still there
    answers(lambda: post(base, secret).status_code, 202, within=START_SECONDS)
    assert own_redis.control.xlen(keys.STREAM) == 2


def test_redis_that_stops_answering_gets_503_not_a_hang(processes: Processes, own_redis: OwnRedis) -> None:
    server, secret = own_redis.server, own_redis.secret
    base = processes.api(**own_redis.settings).url
    assert post(base, secret).status_code == 202
    calls, took = handoff_seconds(base)
    server.process.send_signal(19)  # SIGSTOP: connections stay open, nothing answers
    try:
        response = post(base, secret)  # answered while Redis is still frozen: no hang
    finally:
        server.process.send_signal(18)  # SIGCONT
    assert response.status_code == 503
    count, total = handoff_seconds(base)
    assert count == calls + 1
    # It waited for Redis the whole timeout (its deadline is set a moment before its clock starts).
    assert TIMEOUT_MS / 1000 - 0.01 <= total - took < late_bound(TIMEOUT_MS / 1000)


def test_schemathesis_finds_no_server_error_and_no_undocumented_status(
    tmp_path: Path, processes: Processes, owner: tuple[str, str, str]
) -> None:
    secret = owner[0]
    base = processes.api().url
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base}/api/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--generation-deterministic",
            "--header",
            f"Authorization: Bearer {secret}",
            "--request-timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # schemathesis keeps a .schemathesis/ folder in its working directory
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated is not None and int(generated.group(1)) >= 100, result.stdout[-3000:]
