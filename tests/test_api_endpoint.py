"""The ingest endpoint in-process against the suite's real Redis: every status code and
message, both auth headers, site matching, rate limiting, backpressure and what is queued."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
import redis
from starlette.testclient import TestClient

from ingest_api.app import create_app
from ingest_api.front import MAX_HEADER_BYTES
from shared import keys
from shared.config import Settings
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token, hash_token, revoke_token
from shared.lanes import LANE_KEYS, Lane
from tests.endpoint import BODY, PATH, World, assert_error, client_for, post
from tests.timing import late_bound

# --- 202 and what reaches the queue ------------------------------------------------------


def test_accepted_pageview_answers_202_empty_and_is_queued_with_generated_ids(api: TestClient, world: World) -> None:
    response = post(api, world.secret, {**BODY, "visitor_ip": "::ffff:203.0.113.7", "referrer": "https://r.example/"})
    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["RateLimit-Limit"] == "200"
    [envelope] = world.queued()
    assert (envelope.site_id, envelope.site_domain) == (world.site.id, "example.com")
    assert envelope.visitor_ip == "203.0.113.7"
    assert envelope.timestamp_ms == 1776254400000
    assert envelope.url == BODY["url"] and envelope.referrer == "https://r.example/"
    assert uuid.UUID(envelope.page_id).version == uuid.UUID(envelope.session_id).version == 4
    assert envelope.page_id == str(uuid.UUID(envelope.page_id))  # canonical, lower case
    assert abs(envelope.received_ms - time.time() * 1000) < 60_000


def test_client_ids_are_kept_and_null_ids_are_generated(api: TestClient, world: World) -> None:
    ids = {
        "page_id": "2489E9AD-2EE2-8E00-8EC9-32D5F69181C0",
        "session_id": "5b0c9f3e-0d8f-4e5a-9c1e-2f3a4b5c6d7e",
    }
    assert post(api, world.secret, {**BODY, **ids}).status_code == 202
    assert post(api, world.secret, {**BODY, "page_id": None, "session_id": None}).status_code == 202
    kept, generated = world.queued()
    assert (kept.page_id, kept.session_id) == ("2489e9ad-2ee2-8e00-8ec9-32d5f69181c0", ids["session_id"])
    assert generated.page_id != generated.session_id and len(generated.page_id) == 36


@pytest.mark.parametrize("secret_header", ["authorization", "x-api-key", "lower-bearer"])
def test_both_auth_headers_are_accepted(api: TestClient, world: World, secret_header: str) -> None:
    headers = {
        "authorization": {"Authorization": f"Bearer {world.secret}"},
        "x-api-key": {"X-Api-Key": world.secret},
        "lower-bearer": {"Authorization": f"bearer {world.secret}"},
    }[secret_header]
    assert post(api, None, **headers).status_code == 202


def test_bearer_wins_over_x_api_key(api: TestClient, world: World) -> None:
    assert post(api, None, Authorization=f"Bearer {world.secret}", **{"X-Api-Key": "wrong"}).status_code == 202
    assert_error(post(api, None, Authorization="Bearer wrong", **{"X-Api-Key": world.secret}), 401, "Unauthorized")


@pytest.mark.parametrize(
    "url",
    [
        "HTTPS://EXAMPLE.COM/a",
        "https://www.example.com/a",
        "https://example.com:8443/a",
        "https://example.com./a",
        "https://WWW.Example.com.:80/",
    ],
)
def test_url_host_variants_resolve_to_the_site(api: TestClient, world: World, url: str) -> None:
    assert post(api, world.secret, {**BODY, "url": url}).status_code == 202
    assert world.queued()[0].site_id == world.site.id


def test_idna_host_matches_a_unicode_site(api: TestClient, world: World) -> None:
    site = add_site(world.redis, "bücher.example")
    grant(world.redis, world.token.id, site.id, "admin")
    assert post(api, world.secret, {**BODY, "url": "https://www.BÜCHER.example/"}).status_code == 202
    assert post(api, world.secret, {**BODY, "url": "https://xn--bcher-kva.example/"}).status_code == 202
    assert [envelope.site_id for envelope in world.queued()] == [site.id, site.id]


def test_dnt_answers_202_and_queues_nothing(api: TestClient, world: World) -> None:
    assert post(api, world.secret, {**BODY, "dnt": True}).status_code == 202
    assert world.queued() == []


# --- 400, 401, 403, 404 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "Bad request body"),
        (b"", "Bad request body"),
        ({**BODY, "page_id": "nope"}, "Bad request body: page_id must be a UUID"),
        ({**BODY, "url": "ftp://example.com/"}, "url must be an absolute http or https URL"),
        ({**BODY, "timestamp": "2026-04-15 12:00:00"}, "timestamp must be RFC3339"),
        (
            {**BODY, "timestamp": "2999-01-01T00:00:00Z"},
            "timestamp must not be more than 24 hours in the future",
        ),
        ({**BODY, "visitor_ip": "203.0.113.007"}, "visitor_ip must be a valid IP address"),
        ({**BODY, "user_agent": " "}, "user_agent is required"),
        ({**BODY, "referrer": "r" * 2049}, "referrer must be at most 2048 characters"),
        ({**BODY, "screen_width": 100_001}, "screen_width must be an integer from 0 to 100000"),
    ],
)
def test_invalid_bodies_answer_400_with_the_field_message(
    api: TestClient, world: World, body: Any, message: str
) -> None:
    assert_error(post(api, world.secret, body), 400, message)
    assert world.queued() == []


def test_body_of_64_kib_is_read_and_one_byte_more_is_refused(api: TestClient, world: World) -> None:
    base = orjson.dumps({**BODY, "pad": ""})
    exact = base[:-2] + b"x" * (65536 - len(base)) + b'"}'
    assert post(api, world.secret, exact).status_code == 202
    too_big = base[:-2] + b"x" * (65537 - len(base)) + b'"}'
    assert_error(post(api, world.secret, too_big), 400, "Bad request body")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer unknown"},
        {"X-Api-Key": "unknown"},
    ],
)
def test_missing_or_unknown_token_answers_401_before_the_body_is_checked(
    api: TestClient, world: World, headers: dict[str, str]
) -> None:
    assert_error(post(api, None, b"not json", **headers), 401, "Unauthorized")


def test_revoked_and_expired_tokens_answer_401(redis_url: str, world: World) -> None:
    expiring_secret, expiring = create_token(world.redis, "expiring", expires_in_days=1)
    grant(world.redis, expiring.id, world.site.id, "owner")
    with client_for(redis_url) as api:
        assert post(api, world.secret).status_code == 202
        assert post(api, expiring_secret).status_code == 202
    revoke_token(world.redis, world.token.id)
    world.redis.hset(
        keys.TOKEN.format(token_hash=hash_token(expiring_secret)),
        "expires_at",
        "2020-01-01T00:00:00.000+00:00",
    )
    with client_for(redis_url) as api:
        assert_error(post(api, world.secret), 401, "Unauthorized")
        assert_error(post(api, expiring_secret), 401, "Unauthorized")


def test_unknown_host_answers_404(api: TestClient, world: World) -> None:
    for url in [
        "https://other.example/",
        "https://sub.example.com/",
        "https://[2001:db8::1]/",
        "https://-bad-.com/",
    ]:
        assert_error(post(api, world.secret, {**BODY, "url": url}), 404, "Site not found")


@pytest.mark.parametrize("role", ["editor", "viewer", None])
def test_token_without_manage_data_on_the_site_answers_403(api: TestClient, world: World, role: str | None) -> None:
    secret, token = create_token(world.redis, "limited")
    if role:
        grant(world.redis, token.id, world.site.id, role)
    assert_error(post(api, secret), 403, "Access denied")
    assert_error(post(api, secret, {**BODY, "dnt": True}), 403, "Access denied")  # grant before dnt


def test_admin_role_may_ingest(api: TestClient, world: World) -> None:
    secret, token = create_token(world.redis, "admin")
    grant(world.redis, token.id, world.site.id, "admin")
    assert post(api, secret).status_code == 202


def test_request_headers_beyond_the_limit_answer_431_on_every_route(api: TestClient, world: World) -> None:
    def padded(total: int) -> dict[str, str]:
        """Headers for a pageview POST whose names and values add up to ``total`` bytes."""
        headers = {"Authorization": f"Bearer {world.secret}", "X-Padding": ""}
        request = api.build_request("POST", PATH, json=BODY, headers=headers)
        used = sum(len(name) + len(value) for name, value in request.headers.raw)
        return {**headers, "X-Padding": "a" * (total - used)}

    assert api.post(PATH, json=BODY, headers=padded(MAX_HEADER_BYTES)).status_code == 202
    refused = api.post(PATH, json=BODY, headers=padded(MAX_HEADER_BYTES + 1))
    assert_error(refused, 431, "Request header fields too large")
    assert_error(
        api.get("/healthz", headers={"X-Padding": "a" * MAX_HEADER_BYTES}), 431, "Request header fields too large"
    )
    assert len(world.queued()) == 1


# --- every other answer is JSON {"message"} too ----------------------------------------------

INGEST_PATHS = (PATH, "/api/ingest/server/event", "/api/ingest/server/pageviews")


@pytest.mark.parametrize("path", INGEST_PATHS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_an_ingest_path_answer_405_json_with_allow(api: TestClient, path: str, method: str) -> None:
    response = api.request(method, path, json=BODY)
    assert_error(response, 405, "Method Not Allowed")
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("path", INGEST_PATHS)
def test_head_on_an_ingest_path_answers_405_with_allow_and_no_body(api: TestClient, path: str) -> None:
    response = api.head(path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.headers["Allow"] == "POST"
    assert response.content == b""


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/nope", "/api/ingest/server/pageview/"])
def test_head_and_options_on_an_unknown_path_answer_404(api: TestClient, method: str, path: str) -> None:
    response = api.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    if method == "OPTIONS":
        assert response.json() == {"message": "Not Found"}


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/", "/nope", "/api/ingest/server", "/api/ingest/server/pageview/", "/HEALTHZ", "/api/openapi.yaml"]
)
def test_unknown_paths_answer_404_json(api: TestClient, method: str, path: str) -> None:
    assert_error(api.request(method, path, json=BODY), 404, "Not Found")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/api/openapi.json"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_on_an_operational_route_answer_405_json_with_allow(
    api: TestClient, path: str, method: str
) -> None:
    response = api.request(method, path)
    assert_error(response, 405, "Method Not Allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}


def test_a_failing_ingest_route_answers_500_json(
    redis_url: str, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*arguments: Any) -> None:
        raise RuntimeError("site lookup broke")

    monkeypatch.setattr("ingest_api.access.Access.site_for", broken)
    with client_for(redis_url) as api:
        for path in INGEST_PATHS:
            body = [BODY] if path.endswith("pageviews") else {**BODY, "name": "signup"}
            assert_error(
                api.post(path, json=body, headers={"Authorization": f"Bearer {world.secret}"}),
                500,
                "Internal Server Error",
            )
    assert "site lookup broke" in caplog.text
    assert world.queued() == []


def test_a_failing_operational_route_answers_500_json(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*arguments: Any) -> None:
        raise RuntimeError("metrics broke")

    monkeypatch.setattr("ingest_api.operations.Operations.metrics", broken)
    app = create_app(Settings(redis_url=redis_url, redis_timeout_ms=2000))
    with TestClient(app, raise_server_exceptions=False) as api:
        assert_error(api.get("/metrics"), 500, "Internal Server Error")
        assert api.get("/healthz").status_code == 200


# --- 429 --------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(redis_url: str, world: World) -> None:
    with client_for(redis_url, rate_limit=0.25, rate_burst=3) as api:
        statuses = [post(api, world.secret).status_code for _ in range(4)]
        assert statuses == [202, 202, 202, 429]
        limited = post(api, world.secret)
    assert_error(limited, 429, "Too Many Requests")
    assert limited.headers["Retry-After"] == "4"  # one item at 0.25/s, rounded up
    assert limited.headers["RateLimit-Limit"] == "3"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert 9 <= int(limited.headers["RateLimit-Reset"]) <= 12  # three items at 0.25/s
    assert len(world.queued()) == 3


def test_refused_requests_spend_the_budget_and_429_wins_over_them(redis_url: str, world: World) -> None:
    with client_for(redis_url, rate_limit=0.1, rate_burst=2) as api:
        assert_error(post(api, world.secret, b"junk"), 400, "Bad request body")
        assert post(api, world.secret, {**BODY, "dnt": True}).status_code == 202
        assert_error(post(api, world.secret, b"junk"), 429, "Too Many Requests")
        assert_error(post(api, world.secret), 429, "Too Many Requests")
    assert world.queued() == []


def test_concurrent_requests_of_two_tokens_share_a_script_call_but_not_a_budget(redis_url: str, world: World) -> None:
    """Requests that arrive together are decided in one script call (handoff.lua), which reads
    and writes each token's bucket once: every token still gets exactly its own budget."""
    other_secret, other = create_token(world.redis, "second")
    grant(world.redis, other.id, world.site.id, "owner")

    async def scenario() -> dict[str, list[int]]:
        # Lookups cached for a minute: a miss would suspend some requests into a later call.
        settings = Settings(
            redis_url=redis_url, rate_limit=0.01, rate_burst=6, redis_timeout_ms=2000, control_cache_seconds=60
        )
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:

            async def send(secret: str) -> httpx.Response:
                return await client.post(PATH, json=BODY, headers={"Authorization": f"Bearer {secret}"})

            await asyncio.gather(send(world.secret), send(other_secret))  # fills the lookup caches
            calls_before = evalsha_calls(world.redis)
            responses = await asyncio.gather(*(send(secret) for secret in [world.secret, other_secret] * 8))
            assert evalsha_calls(world.redis) - calls_before == 1
            return {
                secret: [r.status_code for r in responses[index::2]]
                for index, secret in enumerate([world.secret, other_secret])
            }

    statuses = asyncio.run(scenario())
    assert statuses == {secret: [202] * 5 + [429] * 3 for secret in (world.secret, other_secret)}
    assert len(world.queued()) == 12
    # Each token's count in its lane (its share) is exactly what the call appended for it.
    counts = world.redis.hgetall(LANE_KEYS[Lane.LIVE].queued_by_token)
    assert {token.decode(): int(count) for token, count in counts.items()} == {world.token.id: 6, other.id: 6}


def test_a_script_call_stops_growing_at_its_envelope_bound_so_big_batches_do_not_hold_redis(
    redis_url: str, world: World
) -> None:
    """Three 1000-item batches arriving together are three script calls, not one of 3000
    envelopes (a call runs alone in Redis; handoff.ENVELOPES_PER_CALL), and every item lands."""

    async def scenario() -> list[int]:
        settings = Settings(
            redis_url=redis_url, rate_limit=1e6, rate_burst=10**6, redis_timeout_ms=2000, control_cache_seconds=60
        )
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            headers = {"Authorization": f"Bearer {world.secret}"}
            await client.post(PATH, json=BODY, headers=headers)  # fills the lookup caches
            calls_before = evalsha_calls(world.redis)
            responses = await asyncio.gather(
                *(client.post("/api/ingest/server/pageviews", json=[BODY] * 1000, headers=headers) for _ in range(3))
            )
            assert evalsha_calls(world.redis) - calls_before == 3
            return [response.status_code for response in responses]

    assert asyncio.run(scenario()) == [202, 202, 202]
    assert len(world.queued()) == 3001


def evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_unknown_tokens_are_limited_per_caller_ip_not_per_token(redis_url: str, world: World) -> None:
    with client_for(redis_url, rate_limit=0.1, rate_burst=2) as api:
        assert [post(api, None, **{"X-Api-Key": f"guess-{n}"}).status_code for n in range(3)] == [
            401,
            401,
            429,
        ]
        assert post(api, world.secret).status_code == 202  # the real token has its own bucket


@pytest.mark.parametrize("trusted, separate_buckets", [("", False), ("10.0.0.0/8", True)])
def test_forwarded_callers_get_their_own_bucket_only_behind_a_trusted_proxy(
    redis_url: str, world: World, trusted: str, separate_buckets: bool
) -> None:
    settings = Settings(
        redis_url=redis_url,
        rate_limit=0.1,
        rate_burst=1,
        trusted_proxies=tuple(ipaddress.ip_network(net) for net in trusted.split()),
        redis_timeout_ms=2000,
    )
    with TestClient(create_app(settings), client=("10.1.2.3", 40000)) as api:
        assert post(api, None, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 401
        second = post(api, None, **{"X-Forwarded-For": "198.51.100.2"}).status_code
    assert second == (401 if separate_buckets else 429)


# --- 503 --------------------------------------------------------------------------------------


def test_queue_at_maximum_depth_answers_503_and_writes_nothing(redis_url: str, world: World) -> None:
    budget = {"rate_limit": 0.001, "rate_burst": 3}
    with client_for(redis_url, queue_max_depth=2, token_queue_share=1.0, **budget) as api:
        assert [post(api, world.secret).status_code for _ in range(2)] == [202, 202]
        full = post(api, world.secret)
    assert_error(full, 503, "Service not available")
    assert full.headers["Retry-After"] == "1"
    assert len(world.queued()) == 2
    with client_for(redis_url, queue_max_depth=3, token_queue_share=1.0, **budget) as api:
        # The 503 was not charged: the third item of the budget is still there.
        assert post(api, world.secret).status_code == 202
        assert post(api, world.secret).status_code == 429
    assert len(world.queued()) == 3


def test_unreachable_redis_answers_503_within_the_timeout(world: World) -> None:
    closed_port_url = "redis://127.0.0.1:1/0"
    timeout_ms = 200
    with client_for(closed_port_url, redis_timeout_ms=timeout_ms) as api:
        started = time.monotonic()
        response = post(api, world.secret)
        elapsed = time.monotonic() - started
        ready = api.get("/readyz")
    assert_error(response, 503, "Service not available")
    assert response.headers["Retry-After"] == "1"
    assert elapsed < late_bound(timeout_ms / 1000)
    assert_error(ready, 503, "Redis does not answer")


def test_script_is_reloaded_after_redis_forgets_it(api: TestClient, world: World) -> None:
    assert post(api, world.secret).status_code == 202
    world.redis.script_flush()
    assert post(api, world.secret).status_code == 202
    assert len(world.queued()) == 2


# --- operations -------------------------------------------------------------------------------


def test_health_readiness_and_metrics(api: TestClient, world: World) -> None:
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").text == "ready"
    post(api, world.secret)
    post(api, None)
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert f'hitstream_api_requests_total{{route="{PATH}",status="202"}} 1.0' in text
    assert f'hitstream_api_requests_total{{route="{PATH}",status="401"}} 1.0' in text
    # One script call each: the 202's hand-off and the 401's charge to the caller's bucket.
    assert "hitstream_api_handoff_seconds_count 2.0" in text
    assert 'hitstream_queue_depth{lane="live"} 1.0' in text
    assert world.secret not in text and "203.0.113.7" not in text


def test_openapi_documents_every_status_code_the_endpoint_answers(api: TestClient) -> None:
    document = api.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    responses = document["paths"][PATH]["post"]["responses"]
    assert set(responses) == {"202", "400", "401", "403", "404", "429", "431", "503"}
    assert all("431" in operation["responses"] for path in document["paths"].values() for operation in path.values())
    assert set(responses["429"]["headers"]) >= {
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    }


def test_logs_carry_neither_token_nor_visitor_ip(
    api: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="hitstream")
    post(api, world.secret)
    post(api, world.secret, {**BODY, "url": "https://nope.example/"})
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert world.site.id in messages and "404" in messages
    assert world.secret not in messages and "203.0.113.7" not in messages
