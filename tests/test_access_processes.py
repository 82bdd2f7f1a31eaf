"""Access across real API processes: grants are per site and per role, revocation and expiry
reach every process within the control cache's time, and a secret never leaves the API process except as its
SHA-256 hash (so no log, metric or Redis command carries it, and the lookup is a hash-keyed
read that cannot leak through timing how close a guess was)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from ingest_api.openapi import PAGEVIEW_PATH
from shared import keys
from shared.config import Settings
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token, hash_token, revoke_token
from tests.procs import Api, Processes, wait_until
from tests.timing import late_bound
from tests.traffic import pageview

# A change is seen once each process's cached answer has expired (the control cache's time).
CHANGE_VISIBLE_SECONDS = late_bound(Settings.control_cache_seconds)


def post(api: Api, secret: str, host: str = "example.com") -> int:
    _, body = pageview(0, host)
    return httpx.post(
        api.url + PAGEVIEW_PATH, content=body, timeout=10, headers={"Authorization": f"Bearer {secret}"}
    ).status_code


def token_for(client: redis.Redis, grants: dict[str, str]) -> tuple[str, str]:
    """(secret, token id) of a new token with ``grants`` (site id -> role)."""
    secret, token = create_token(client, "access test")
    for site_id, role in grants.items():
        grant(client, token.id, site_id, role)
    return secret, token.id


def test_grants_are_per_site_and_only_owner_or_admin_may_write(processes: Processes, real_redis: redis.Redis) -> None:
    site_a, site_b = add_site(real_redis, "a.example"), add_site(real_redis, "b.example")
    api = processes.api()
    owner_of_a, _ = token_for(real_redis, {site_a.id: "owner"})
    assert post(api, owner_of_a, "a.example") == 202
    assert post(api, owner_of_a, "b.example") == 403
    for role in ("editor", "viewer"):
        secret, _ = token_for(real_redis, {site_a.id: role, site_b.id: role})
        assert (post(api, secret, "a.example"), post(api, secret, "b.example")) == (403, 403)
    assert real_redis.xlen(keys.STREAM) == 1


@pytest.mark.parametrize("change", ["revoke", "expire"])
def test_revocation_and_expiry_reach_every_api_process_within_the_control_cache_time(
    processes: Processes, real_redis: redis.Redis, change: str
) -> None:
    site = add_site(real_redis, "example.com")
    secret, token_id = token_for(real_redis, {site.id: "owner"})
    apis = [processes.api(), processes.api()]
    assert [post(api, secret) for api in apis] == [202, 202]  # both processes have it cached

    if change == "revoke":
        revoke_token(real_redis, token_id)
    else:  # a token created to expire now: its expires_at passes
        expires = (datetime.now(UTC) + timedelta(milliseconds=300)).isoformat(timespec="milliseconds")
        real_redis.hset(keys.TOKEN.format(token_hash=hash_token(secret)), "expires_at", expires)
    changed = time.monotonic()
    for api in apis:
        wait_until(
            lambda api=api: post(api, secret) == 401,
            CHANGE_VISIBLE_SECONDS - (time.monotonic() - changed),
            f"{change} to reach {api.url}",
            interval=0.1,
        )
    print(f"\n{change} refused by both API processes after {time.monotonic() - changed:.2f} s")


def test_secrets_reach_redis_only_as_their_hash_and_never_logs_or_metrics(
    processes: Processes, real_redis: redis.Redis
) -> None:
    site = add_site(real_redis, "example.com")
    secret, _ = token_for(real_redis, {site.id: "owner"})
    # An unknown secret sharing a long prefix with the real one: a comparing lookup would
    # be the one to leak through timing; a hash lookup turns it into an unrelated key.
    near_miss = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    api = processes.api(HITSTREAM_LOG_LEVEL="DEBUG")

    commands: list[str] = []
    monitor_ready = threading.Event()

    def monitor() -> None:
        with real_redis.monitor() as watch:
            monitor_ready.set()
            for command in watch.listen():
                commands.append(command["command"])
                if "stop-monitor" in command["command"]:
                    return

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    monitor_ready.wait(5)
    assert post(api, secret) == 202
    assert post(api, near_miss) == 401
    real_redis.echo("stop-monitor")
    watcher.join(10)

    seen = "\n".join(commands)
    assert hash_token(secret) in seen and hash_token(near_miss) in seen, "tokens are looked up by hash"
    for leaked in (secret, near_miss, secret[:32]):
        assert leaked not in seen
        assert leaked not in api.metrics()
        assert leaked not in api.output()
