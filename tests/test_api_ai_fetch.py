"""HitKeep's AI-fetch endpoint, ``POST /api/sites/{id}/ingest/ai-fetch``, in-process against the
suite's real Redis, case by case against HitKeep 2.8.1's contract (its fields, permission,
codes and messages, the 64 KiB cap), then what hitstream adds: ``timestamp``, ``visitor_ip``,
``fetch_id``, the batch form ``/ai-fetches`` and every known crawler, not only 22."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ingest_api.ai_fetch import SiteItem
from ingest_api.fields import AI_FETCH_BODY
from ingest_api.intake import queued
from ingest_api.item_rules import AI_FETCH
from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token
from shared.envelope import Envelope
from tests.endpoint import World, assert_error, client_for

GPTBOT = "Mozilla/5.0 (compatible; GPTBot/1.0; +https://openai.com/gptbot)"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
FETCH: dict[str, Any] = {"path": "/docs", "status_code": 200, "user_agent": GPTBOT}
# HitKeep's 22 AI bots, by the user-agent token each is matched on.
HITKEEP_BOTS = (
    "ChatGPT-User GPTBot ClaudeBot Claude-Web PerplexityBot Google-Extended GoogleOther Google-Safety "
    "Applebot-Extended Bytespider CCBot meta-externalagent meta-externalfetcher Amazonbot cohere-ai "
    "YouBot AI2Bot Diffbot Timpibot ImagesiftBot DeepSeekBot PetalBot"
).split()


@pytest.fixture
def api(redis_url: str) -> Iterator[TestClient]:
    with client_for(redis_url) as client:
        yield client


def path(site_id: str, batch: bool = False) -> str:
    return f"/api/sites/{site_id}/ingest/{'ai-fetches' if batch else 'ai-fetch'}"


def send(api: TestClient, world: World, body: Any = None, site_id: str | None = None, **headers: str) -> Any:
    headers.setdefault("X-API-Key", world.secret)
    content = body if isinstance(body, bytes) else orjson.dumps(FETCH if body is None else body)
    return api.post(path(site_id or world.site.id), content=content, headers=headers)


def accepted(response: Any) -> bool:
    return response.status_code == 202 and response.content == b""


# --- accepted, and what is queued ------------------------------------------------------------


def test_a_known_bots_fetch_is_answered_202_and_queued_for_the_sites_in_the_path(api: TestClient, world: World) -> None:
    body = {
        "path": "https://docs.example.com/guides/ai?from=bot#fragment",
        "status_code": 200,
        "content_type": "application/pdf",
        "response_ms": 184,
        "bytes_served": 4096,
        "user_agent": f"  {GPTBOT} ",
    }
    assert accepted(send(api, world, body))
    [envelope] = world.queued()
    assert (envelope.kind, envelope.site_id, envelope.site_domain) == ("ai_fetch", world.site.id, "example.com")
    # Fragments are the client's own: dropped; the query is kept; the URL's host stands in for hostname.
    assert envelope.url == "//docs.example.com/guides/ai?from=bot"
    assert envelope.user_agent == GPTBOT
    assert envelope.fetch == {
        "status_code": 200,
        "content_type": "application/pdf",
        "response_ms": 184,
        "bytes_served": 4096,
    }
    assert envelope.visitor_ip is None  # unverifiable: HitKeep's fields carry no crawler address
    assert envelope.timestamp_ms == envelope.received_ms
    assert uuid.UUID(envelope.page_id).version == 4


@pytest.mark.parametrize(
    ("sent", "url"),
    [
        ({"path": "/docs"}, "/docs"),
        ({"path": "docs/a"}, "/docs/a"),
        ({"path": "  /docs?x=1  ", "hostname": " Docs.Example.com "}, "//docs.example.com/docs?x=1"),
        ({"path": "https://a.example/x", "hostname": "b.example"}, "//b.example/x"),
        ({"path": "https://a.example"}, "//a.example/"),
        ({"path": "https://[::1/x"}, "/https://[::1/x"),  # no URL (Go's url.Parse fails too): a path
    ],
)
def test_path_and_hostname_are_read_as_hitkeep_reads_them(
    api: TestClient, world: World, sent: dict[str, Any], url: str
) -> None:
    assert accepted(send(api, world, {**FETCH, **sent}))
    assert [envelope.url for envelope in world.queued()] == [url]


@pytest.mark.parametrize("token", HITKEEP_BOTS)
def test_each_of_hitkeeps_22_ai_bots_is_accepted(api: TestClient, world: World, token: str) -> None:
    assert accepted(send(api, world, {**FETCH, "user_agent": f"Mozilla/5.0 (compatible; {token}/1.0)"}))


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; GenericCrawler/1.0)",  # HitKeep's test refuses it; crawler-user-agents knows it
    ],
)
def test_crawlers_beyond_hitkeeps_22_are_accepted(api: TestClient, world: World, user_agent: str) -> None:
    assert accepted(send(api, world, {**FETCH, "user_agent": user_agent}))


def test_the_queued_envelope_is_exactly_what_the_envelope_contract_writes(world: World) -> None:
    validated = AI_FETCH.check(SiteItem(world.site.id, {**FETCH, "visitor_ip": "132.196.86.7"}), 1776254400000)
    envelope = queued(validated, world.site, 1776254400005).envelope
    assert Envelope.from_json(envelope).to_json() == envelope


# --- HitKeep's refusals, one by one ---------------------------------------------------------------


def test_no_token_is_401(api: TestClient, world: World) -> None:
    assert_error(api.post(path(world.site.id), json=FETCH), 401, "Unauthorized")
    assert_error(send(api, world, **{"X-API-Key": "wrong"}), 401, "Unauthorized")


@pytest.mark.parametrize("site_id", ["not-a-uuid", "1234", "6f0b7e0e-4d5c-4b7a-9a51-2f4f5b8f3c1"])
def test_a_site_id_that_is_no_uuid_is_400_invalid_site_id(api: TestClient, world: World, site_id: str) -> None:
    assert_error(send(api, world, site_id=site_id), 400, "Invalid site_id")


def test_an_unknown_site_is_404(api: TestClient, world: World) -> None:
    assert_error(send(api, world, site_id=str(uuid.uuid4())), 404, "Site not found")


def test_the_site_id_may_be_upper_case(api: TestClient, world: World) -> None:
    assert accepted(send(api, world, site_id=world.site.id.upper()))
    assert [envelope.site_id for envelope in world.queued()] == [world.site.id]


@pytest.mark.parametrize("role", [None, "viewer", "editor"])
def test_a_token_without_site_manage_data_on_the_paths_site_is_403(
    api: TestClient, world: World, role: str | None
) -> None:
    secret, token = create_token(world.redis, "no data rights")
    other = add_site(world.redis, "other.example")
    grant(world.redis, token.id, other.id, "owner")  # rights elsewhere do not count
    if role is not None:
        grant(world.redis, token.id, world.site.id, role)
    assert_error(send(api, world, **{"X-API-Key": secret}), 403, "Access denied")
    assert world.queued() == []


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owners_and_admins_may_send(api: TestClient, world: World, role: str) -> None:
    secret, token = create_token(world.redis, role)
    grant(world.redis, token.id, world.site.id, role)
    assert accepted(send(api, world, **{"X-API-Key": secret}))


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'["path"]', b'"a string"', b"42", b"null", b'{"path": "/docs",'],
)
def test_a_body_that_is_no_json_object_is_400_bad_request_body(api: TestClient, world: World, body: bytes) -> None:
    assert_error(send(api, world, body), 400, "Bad request body")


def test_the_body_cap_is_64_kib(api: TestClient, world: World) -> None:
    padding = 65536 - len(orjson.dumps({**FETCH, "padding": ""}))
    at_cap = orjson.dumps({**FETCH, "padding": "x" * padding})
    assert len(at_cap) == 65536
    assert accepted(send(api, world, at_cap))
    over = orjson.dumps({**FETCH, "padding": "x" * (padding + 1)})
    assert_error(send(api, world, over), 400, "Bad request body")
    # HitKeep's own case: a 70 KiB user agent.
    assert_error(send(api, world, {**FETCH, "user_agent": "A" * (70 << 10)}), 400, "Bad request body")
    assert len(world.queued()) == 1


@pytest.mark.parametrize("status_code", [None, 0, 99, 600, 1000, -200])
def test_a_status_code_outside_100_to_599_is_400(api: TestClient, world: World, status_code: int | None) -> None:
    body = {key: value for key, value in FETCH.items() if key != "status_code"}
    if status_code is not None:
        body["status_code"] = status_code
    assert_error(send(api, world, body), 400, "status_code must be between 100 and 599")


@pytest.mark.parametrize("status_code", [100, 301, 404, 599])
def test_status_codes_from_100_to_599_are_accepted(api: TestClient, world: World, status_code: int) -> None:
    assert accepted(send(api, world, {**FETCH, "status_code": status_code}))
    assert [envelope.fetch["status_code"] for envelope in world.queued() if envelope.fetch] == [status_code]


@pytest.mark.parametrize(
    "user_agent",
    [
        None,
        "",
        "   ",
        CHROME,
        "Mozilla/5.0 (compatible; Widget/1.0)",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    ],
)
def test_a_user_agent_naming_no_known_crawler_is_400(api: TestClient, world: World, user_agent: str | None) -> None:
    assert_error(send(api, world, {**FETCH, "user_agent": user_agent}), 400, "user_agent must match a known AI bot")


@pytest.mark.parametrize("sent", [{"path": None}, {"path": ""}, {"path": "   "}])
def test_a_missing_path_is_400(api: TestClient, world: World, sent: dict[str, Any]) -> None:
    assert_error(send(api, world, {**FETCH, **sent}), 400, "path is required")


def test_hitkeeps_order_decides_which_refusal_a_body_gets(api: TestClient, world: World) -> None:
    everything_wrong = {"path": "", "status_code": 0, "user_agent": CHROME}
    assert_error(send(api, world, everything_wrong), 400, "status_code must be between 100 and 599")
    assert_error(
        send(api, world, {**everything_wrong, "status_code": 200}), 400, "user_agent must match a known AI bot"
    )
    assert_error(
        send(api, world, {**everything_wrong, "status_code": 200, "user_agent": GPTBOT}), 400, "path is required"
    )
    assert_error(send(api, world, b"{", site_id="nope"), 400, "Invalid site_id")  # the path before the body


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ({"status_code": "200"}, "Bad request body: status_code must be an integer"),
        ({"status_code": 200.0}, "Bad request body: status_code must be an integer"),
        ({"path": 5}, "Bad request body: path must be a string"),
        ({"user_agent": ["GPTBot"]}, "Bad request body: user_agent must be a string"),
        ({"response_ms": "184"}, "Bad request body: response_ms must be an integer"),
        ({"bytes_served": True}, "Bad request body: bytes_served must be an integer"),
        ({"fetch_id": "nope"}, "Bad request body: fetch_id must be a UUID"),
    ],
)
def test_a_field_of_the_wrong_type_is_400_naming_it(
    api: TestClient, world: World, sent: dict[str, Any], message: str
) -> None:
    assert_error(send(api, world, {**FETCH, **sent}), 400, message)


def test_no_refusal_queues_anything(api: TestClient, world: World) -> None:
    for body in ({**FETCH, "status_code": 0}, {**FETCH, "user_agent": CHROME}, {**FETCH, "path": ""}, b"[]"):
        assert send(api, world, body).status_code == 400
    assert world.queued() == []


def test_another_method_is_405_and_another_path_404(api: TestClient, world: World) -> None:
    assert_error(api.get(path(world.site.id)), 405, "Method Not Allowed")
    assert_error(api.post(f"/api/sites/{world.site.id}/x/ingest/ai-fetch", json=FETCH), 404, "Not Found")
    assert_error(api.post("/api/sites//ingest/ai-fetch", json=FETCH), 404, "Not Found")


# --- ours: timestamp, visitor_ip, fetch_id, bounds -------------------------------------------------


def test_timestamp_and_visitor_ip_are_taken_when_sent(api: TestClient, world: World) -> None:
    sent = {**FETCH, "timestamp": "2026-04-15T12:00:00.250+02:00", "visitor_ip": "::ffff:132.196.86.7"}
    assert accepted(send(api, world, sent))
    [envelope] = world.queued()
    assert (envelope.timestamp_ms, envelope.visitor_ip) == (1776247200250, "132.196.86.7")


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ({"timestamp": "yesterday"}, "timestamp must be RFC3339"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "timestamp must not be more than 24 hours in the future"),
        ({"visitor_ip": "132.196.86.7:443"}, "visitor_ip must be a valid IP address"),
        ({"visitor_ip": ""}, "visitor_ip must be a valid IP address"),
        ({"hostname": "https://docs.example.com"}, "hostname must be a host name (no scheme, path or spaces)"),
        ({"hostname": "a b.example"}, "hostname must be a host name (no scheme, path or spaces)"),
        ({"hostname": "[::1"}, "hostname must be a host name (no scheme, path or spaces)"),
        ({"path": "/a b"}, "path must not contain control characters or spaces"),
        ({"path": "/" + "a" * 4096}, "path must be at most 4096 characters"),
        ({"hostname": "a" * 254}, "hostname must be at most 253 characters"),
        ({"user_agent": GPTBOT + "x" * 2048}, "user_agent must be at most 2048 characters"),
        ({"content_type": "x" * 256}, "content_type must be at most 255 characters"),
        ({"response_ms": 2**32}, "response_ms must be an integer from 0 to 4294967295"),
        ({"bytes_served": 2**63}, "bytes_served must be an integer from 0 to 9223372036854775807"),
    ],
)
def test_our_fields_and_bounds_are_400_naming_the_field(
    api: TestClient, world: World, sent: dict[str, Any], message: str
) -> None:
    assert_error(send(api, world, {**FETCH, **sent}), 400, message)


def test_a_time_or_size_of_zero_or_less_is_not_reported_as_hitkeep_reads_it(api: TestClient, world: World) -> None:
    assert accepted(send(api, world, {**FETCH, "response_ms": 0, "bytes_served": -5, "content_type": "  "}))
    [envelope] = world.queued()
    assert envelope.fetch == {"status_code": 200, "content_type": None, "response_ms": None, "bytes_served": None}


def test_a_fetch_id_sent_again_is_answered_202_and_queued_once(api: TestClient, world: World) -> None:
    fetch_id = str(uuid.uuid4())
    for _ in range(2):
        assert accepted(send(api, world, {**FETCH, "fetch_id": fetch_id.upper()}))
    assert [envelope.page_id for envelope in world.queued()] == [fetch_id]
    # A pageview with the same UUID as page_id is another item.
    assert world.redis.exists(keys.SEEN.format(kind="ai_fetch", site_id=world.site.id, item=fetch_id))


# --- the batch form ------------------------------------------------------------------------------


def test_the_batch_form_answers_per_item_and_queues_the_valid_ones(api: TestClient, world: World) -> None:
    items = [FETCH, {**FETCH, "status_code": 0}, {**FETCH, "path": "/b", "user_agent": CHROME}, {**FETCH, "path": "/c"}]
    response = api.post(path(world.site.id, batch=True), json=items, headers={"X-API-Key": world.secret})
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 2,
        "rejected": [
            {"index": 1, "status": 400, "message": "status_code must be between 100 and 599"},
            {"index": 2, "status": 400, "message": "user_agent must match a known AI bot"},
        ],
    }
    assert [envelope.url for envelope in world.queued()] == ["/docs", "/c"]


def test_the_batch_form_takes_ndjson_and_an_idempotency_key(api: TestClient, world: World) -> None:
    lines = b"\n".join(orjson.dumps({**FETCH, "path": f"/{n}"}) for n in range(3)) + b"\n"
    headers = {"X-API-Key": world.secret, "Content-Type": "application/x-ndjson", "Idempotency-Key": "edge-log-7"}
    for _ in range(2):
        response = api.post(path(world.site.id, batch=True), content=lines, headers=headers)
        assert (response.status_code, response.json()) == (202, {"accepted": 3, "rejected": []})
    assert [envelope.url for envelope in world.queued()] == ["/0", "/1", "/2"]


def test_the_batch_form_refuses_a_bad_site_id_or_unknown_site_whole(api: TestClient, world: World) -> None:
    headers = {"X-API-Key": world.secret}
    assert_error(api.post(path("nope", batch=True), json=[FETCH], headers=headers), 400, "Invalid site_id")
    response = api.post(path(str(uuid.uuid4()), batch=True), json=[FETCH, FETCH], headers=headers)
    assert response.status_code == 400
    assert response.json()["rejected"] == [{"index": i, "status": 404, "message": "Site not found"} for i in (0, 1)]
    assert world.queued() == []


# --- metrics hold no site id -----------------------------------------------------------------------


def test_requests_are_counted_under_the_route_template_never_the_site_id(api: TestClient, world: World) -> None:
    assert accepted(send(api, world))
    metrics = api.get("/metrics").text
    assert 'route="/api/sites/{site_id}/ingest/ai-fetch"' in metrics
    assert world.site.id not in metrics


# --- the OpenAPI document --------------------------------------------------------------------------


def test_openapi_documents_both_routes_from_the_field_table_and_its_example_is_accepted(
    api: TestClient, world: World
) -> None:
    document = api.get("/api/openapi.json").json()
    single = document["paths"]["/api/sites/{site_id}/ingest/ai-fetch"]["post"]
    assert set(single["responses"]) == {"202", "400", "401", "403", "404", "429", "431", "503"}
    batch = document["paths"]["/api/sites/{site_id}/ingest/ai-fetches"]["post"]
    assert set(batch["responses"]) == {"202", "400", "401", "403", "422", "429", "431", "503"}
    assert {parameter["name"] for parameter in batch["parameters"]} == {
        "site_id",
        "Idempotency-Key",
        "X-Hitstream-Lane",
    }
    schema = document["components"]["schemas"]["AiFetch"]
    assert list(schema["properties"]) == [field.name for field in AI_FETCH_BODY]
    assert schema["required"] == ["path", "status_code", "user_agent"]
    assert (schema["properties"]["status_code"]["minimum"], schema["properties"]["status_code"]["maximum"]) == (
        100,
        599,
    )
    assert accepted(send(api, world, schema["example"]))
    [envelope] = world.queued()
    assert (envelope.url, envelope.visitor_ip) == ("//docs.example.com/guides/ai?from=bot", "132.196.86.7")
