"""Which responses the ASGI and WSGI middleware record, and what a recorded pageview says:
the same cases through both adapters, each driven as its server would drive it, into a
client that remembers what it was given."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from hitstream.client.asgi import HitstreamMiddleware
from hitstream.client.wsgi import HitstreamWSGIMiddleware

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
PROXY = "10.0.0.5"
VISITOR = "203.0.113.199"


@dataclass
class Recorded:
    """Stands in for a Client: what send_pageview was called with."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def send_pageview(self, url: str, visitor_ip: str, user_agent: str, **optional: Any) -> str:
        self.calls.append({"url": url, "visitor_ip": visitor_ip, "user_agent": user_agent, **optional})
        return "page-id"


@dataclass
class Visit:
    path: str = "/pricing"
    query: str = ""
    method: str = "GET"
    peer: str = VISITOR
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    content_type: str | None = "text/html; charset=utf-8"


def through_asgi(visit: Visit, **options: Any) -> list[dict[str, Any]]:
    recorded = Recorded()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", visit.content_type.encode())] if visit.content_type else []
        await send({"type": "http.response.start", "status": visit.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"<h1>x</h1>"})

    async def served() -> None:
        middleware = HitstreamMiddleware(app, recorded, **options)  # type: ignore[arg-type]
        scope = {
            "type": "http",
            "method": visit.method,
            "scheme": "http",
            "path": visit.path,
            "raw_path": visit.path.encode(),
            "query_string": visit.query.encode(),
            "client": (visit.peer, 50000),
            "headers": [(name.lower().encode(), value.encode()) for name, value in visit.headers.items()],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            pass

        await middleware(scope, receive, send)

    asyncio.run(served())
    return recorded.calls


def through_wsgi(visit: Visit, **options: Any) -> list[dict[str, Any]]:
    recorded = Recorded()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        headers = [("Content-Type", visit.content_type)] if visit.content_type else []
        start_response(f"{visit.status} Whatever", headers)
        return [b"<h1>x</h1>"]

    environ = {
        "REQUEST_METHOD": visit.method,
        "wsgi.url_scheme": "http",
        "SCRIPT_NAME": "",
        "PATH_INFO": visit.path,
        "QUERY_STRING": visit.query,
        "REMOTE_ADDR": visit.peer,
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in visit.headers.items()},
    }
    middleware = HitstreamWSGIMiddleware(app, recorded, **options)  # type: ignore[arg-type]
    assert list(middleware(environ, lambda status, headers, exc_info=None: None)) == [b"<h1>x</h1>"]
    return recorded.calls


ADAPTERS = pytest.mark.parametrize("serve", [through_asgi, through_wsgi], ids=["asgi", "wsgi"])
BROWSER_HEADERS = {"Host": "example.com", "User-Agent": BROWSER}


@ADAPTERS
def test_a_served_html_page_is_recorded_with_the_requests_url_visitor_and_headers(serve: Any) -> None:
    visit = Visit(
        query="utm_source=news",
        headers={
            **BROWSER_HEADERS,
            "Referer": "https://news.example.org/",
            "Accept-Language": "de-CH,de;q=0.9,en;q=0.5",
            "DNT": "1",
        },
    )
    assert serve(visit) == [
        {
            "url": "http://example.com/pricing?utm_source=news",
            "visitor_ip": VISITOR,
            "user_agent": BROWSER,
            "referrer": "https://news.example.org/",
            "language": "de-CH",
            "dnt": True,
        }
    ]


@ADAPTERS
@pytest.mark.parametrize(
    "visit",
    [
        Visit(status=404),
        Visit(status=500),
        Visit(status=301),
        Visit(content_type="application/json"),
        Visit(content_type="text/plain"),
        Visit(content_type=None),
        Visit(method="HEAD"),
        Visit(path="/static"),
        Visit(path="/static/app.html"),
        Visit(path="/healthz"),
    ],
    ids=["404", "500", "redirect", "json", "text", "no-type", "head", "skipped", "under-skipped", "skipped-exact"],
)
def test_what_is_not_a_served_page_is_not_recorded(serve: Any, visit: Visit) -> None:
    visit.headers = BROWSER_HEADERS
    assert serve(visit, skip_paths=["/static/", "/healthz"]) == []


@ADAPTERS
@pytest.mark.parametrize(
    "visit",
    [
        Visit(status=204, content_type="text/html"),
        Visit(content_type="application/xhtml+xml"),
        Visit(content_type="TEXT/HTML"),
        Visit(path="/statics"),
        Visit(method="POST"),
    ],
    ids=["204", "xhtml", "upper-case-type", "prefix-is-not-a-segment", "post"],
)
def test_other_successful_html_responses_are_recorded(serve: Any, visit: Visit) -> None:
    visit.headers = BROWSER_HEADERS
    assert len(serve(visit, skip_paths=["/static"])) == 1


@ADAPTERS
@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "visitor"),
    [
        (VISITOR, "198.51.100.1", [], VISITOR),  # no trusted proxy: a visitor cannot choose its IP
        (VISITOR, "198.51.100.1", [f"{PROXY}/32"], VISITOR),  # the header is not from our proxy
        (PROXY, VISITOR, [f"{PROXY}/32"], VISITOR),
        (PROXY, f"198.51.100.1, {VISITOR}", ["10.0.0.0/8"], VISITOR),  # the left entry is the visitor's to write
        (PROXY, f"{VISITOR}, 10.0.0.9", ["10.0.0.0/8"], VISITOR),  # two proxies of ours
        (PROXY, "not-an-ip", ["10.0.0.0/8"], PROXY),
        ("2001:db8::1", "", [], "2001:db8::1"),
    ],
    ids=["untrusted", "other-peer", "one-proxy", "spoofed-left", "two-proxies", "garbage", "ipv6"],
)
def test_the_visitor_ip_is_the_peer_or_whom_trusted_proxies_name(
    serve: Any, peer: str, forwarded_for: str, trusted: list[str], visitor: str
) -> None:
    headers = {**BROWSER_HEADERS, **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    (call,) = serve(Visit(peer=peer, headers=headers), trusted_proxies=trusted)
    assert call["visitor_ip"] == visitor


@ADAPTERS
@pytest.mark.parametrize(
    ("peer", "options", "url"),
    [
        (PROXY, {"trusted_proxies": [f"{PROXY}/32"]}, "https://www.example.com/pricing"),
        (VISITOR, {"trusted_proxies": [f"{PROXY}/32"]}, "http://example.com/pricing"),  # not from our proxy
        (PROXY, {}, "http://example.com/pricing"),
        (VISITOR, {"base_url": "https://shop.example.com/"}, "https://shop.example.com/pricing"),
    ],
    ids=["trusted", "untrusted", "no-proxies", "base-url"],
)
def test_the_scheme_and_host_come_from_trusted_proxies_or_the_base_url(
    serve: Any, peer: str, options: dict[str, Any], url: str
) -> None:
    headers = {**BROWSER_HEADERS, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.example.com"}
    (call,) = serve(Visit(peer=peer, headers=headers), **options)
    assert call["url"] == url


class Broken(Recorded):
    def send_pageview(self, url: str, visitor_ip: str, user_agent: str, **optional: Any) -> str:
        raise RuntimeError("the client broke")


@pytest.mark.parametrize("adapter", [HitstreamMiddleware, HitstreamWSGIMiddleware], ids=["asgi", "wsgi"])
def test_a_page_is_still_served_when_recording_it_fails(adapter: Any, caplog: pytest.LogCaptureFixture) -> None:
    served: list[Any] = []

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<h1>x</h1>"})

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<h1>x</h1>"]

    if adapter is HitstreamMiddleware:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (VISITOR, 1)}

        async def send(message: dict[str, Any]) -> None:
            served.append(message.get("body", message.get("status")))

        asyncio.run(adapter(asgi_app, Broken())(scope, None, send))
    else:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": VISITOR}
        served.extend(adapter(wsgi_app, Broken())(environ, lambda *args: served.append(int(args[0][:3]))))

    assert served == [200, b"<h1>x</h1>"]
    assert "could not record a page" in caplog.text
