"""The ingest endpoint in-process (a pytest plugin of the suite): the ``world`` fixture (a
site and an ingest token granted on it), the ``api`` fixture (a TestClient against the
suite's real Redis) and the helpers that post to it and check its answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from ingest_api.app import create_app
from shared import keys
from shared.config import Settings
from shared.control.grants import grant
from shared.control.sites import Site, add_site
from shared.control.tokens import ApiToken, create_token
from shared.envelope import Envelope

PATH = "/api/ingest/server/pageview"
BODY: dict[str, Any] = {
    "url": "https://example.com/pricing?utm_source=newsletter",
    "timestamp": "2026-04-15T12:00:00Z",
    "visitor_ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
}


@dataclass
class World:
    redis: redis.Redis
    site: Site
    secret: str
    token: ApiToken

    def queued(self) -> list[Envelope]:
        return [Envelope.from_json(fields[b"e"]) for _, fields in self.redis.xrange(keys.STREAM)]


def make_world(client: redis.Redis) -> World:
    """A site, a token and its owner grant on the Redis behind ``client``."""
    site = add_site(client, "example.com")
    secret, token = create_token(client, "ingest")
    grant(client, token.id, site.id, "owner")
    return World(client, site, secret, token)


@pytest.fixture
def world(real_redis: redis.Redis) -> World:
    return make_world(real_redis)


def client_for(redis_url: str, **settings: Any) -> TestClient:
    # A generous Redis timeout: the whole suite shares two cores, and a 503 from a starved
    # thread is not what these tests are about (the timeout tests set their own).
    settings.setdefault("redis_timeout_ms", 2000)
    return TestClient(create_app(Settings(redis_url=redis_url, **settings)))


@pytest.fixture
def api(redis_url: str) -> Iterator[TestClient]:
    with client_for(redis_url) as client:
        yield client


def post(client: TestClient, secret: str | None, body: Any = None, **headers: str) -> Any:
    if secret is not None:
        headers.setdefault("Authorization", f"Bearer {secret}")
    content = body if isinstance(body, bytes) else None
    return client.post(
        PATH, json=None if content else (BODY if body is None else body), content=content, headers=headers
    )


def assert_error(response: Any, status: int, message: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": message}
