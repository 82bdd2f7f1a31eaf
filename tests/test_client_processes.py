"""The client and its middleware end to end: a real Starlette app served by uvicorn and a real
WSGI app served by wsgiref record their pages through real ``hitstream api`` and ``hitstream
worker`` processes into the store, with exact counts; and an API that is down for 10 s and
comes back loses and duplicates nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from hitstream.client import AsyncClient, Client, Options
from hitstream.client.asgi import HitstreamMiddleware
from hitstream.client.wsgi import HitstreamWSGIMiddleware
from tests.ports import free_port
from tests.procs import Processes, query_store, stored_pages, wait_until
from tests.test_api_store import drain
from tests.traffic import VISITOR_IPS, ingest_token

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
OUTAGE_SECONDS = 10.0
QUICK = Options(batch_items=10, flush_interval=0.1, max_retry_seconds=60.0)
# What each app is asked, as (method, path, user agent); only the first six are pages.
VISITS = [
    ("GET", "/", BROWSER),
    ("GET", "/?utm_source=newsletter", BROWSER),
    ("GET", "/pricing", BROWSER),
    ("GET", "/pricing", BROWSER),
    ("GET", "/caf%C3%A9", BROWSER),
    ("GET", "/pricing", CRAWLER),  # recorded: the pipeline flags bots, the middleware does not judge
    ("GET", "/api/data", BROWSER),  # JSON
    ("GET", "/missing", BROWSER),  # 404
    ("GET", "/static/page.html", BROWSER),  # skipped path
    ("HEAD", "/pricing", BROWSER),  # no page was viewed
    ("POST", "/pricing", BROWSER),  # 405
]
STORED_PAGES = [
    ["/", "", 0],
    ["/", "utm_source=newsletter", 0],
    ["/caf%C3%A9", "", 0],  # the URL as sent: percent-encoded
    ["/pricing", "", 0],
    ["/pricing", "", 0],
    ["/pricing", "", 1],
]


def visit(base_url: str) -> None:
    """Every visit, as a browser behind a trusted proxy on 127.0.0.1 for example.com."""
    headers = {
        "Host": "example.com",
        "X-Forwarded-For": VISITOR_IPS[0],
        "Referer": "https://news.example.org/",
        "Accept-Language": "de-CH,de;q=0.9",
    }
    with httpx.Client(base_url=base_url, timeout=10) as browser:
        for method, path, user_agent in VISITS:
            browser.request(method, path, headers={**headers, "User-Agent": user_agent})


def stored(store: Path) -> list[list[Any]]:
    return query_store(
        store, "SELECT path, query, toUInt8(is_bot), referrer, language FROM pageviews ORDER BY path, query, is_bot"
    )


def assert_pages_stored(
    client: Client | AsyncClient, client_redis: redis.Redis, processes: Processes, store: Path
) -> None:
    """The six pages of VISITS were delivered, and stored as they were visited."""
    assert (client.stats.delivered, client.stats.dropped, client.stats.rejected) == (6, 0, 0)
    drain(client_redis, processes, store)
    rows = stored(store)
    assert [row[:3] for row in rows] == STORED_PAGES
    assert {tuple(row[3:]) for row in rows} == {("https://news.example.org/", "de-CH")}


@contextmanager
def served_by_uvicorn(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # lifespan shutdown: the middleware closes the client
        thread.join(30)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def served_by_wsgiref(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_pages_served_by_a_starlette_app_under_uvicorn_land_in_the_store_once_each(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api()
    client = AsyncClient(api.url, ingest_token(real_redis), QUICK)

    async def page(request: Request) -> Response:
        return HTMLResponse("<h1>page</h1>")

    async def data(request: Request) -> Response:
        return JSONResponse({"n": 1})

    app = Starlette(
        routes=[Route(path, page) for path in ("/", "/pricing", "/café", "/static/page.html")]
        + [Route("/api/data", data)],
        middleware=[
            Middleware(HitstreamMiddleware, client=client, trusted_proxies=["127.0.0.1/32"], skip_paths=["/static"])
        ],
    )
    with served_by_uvicorn(app) as base_url:
        visit(base_url)
    # The server's lifespan shutdown delivered everything before it finished.
    assert_pages_stored(client, real_redis, processes, tmp_path / "store")


def test_pages_served_by_a_wsgi_app_land_in_the_store_once_each(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api()
    client = Client(api.url, ingest_token(real_redis), QUICK)
    pages = {"/", "/pricing", "/café", "/static/page.html"}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"].encode("latin-1").decode()
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/html")])
        elif path in pages:
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        elif path == "/api/data":
            start_response("200 OK", [("Content-Type", "application/json")])
        else:
            start_response("404 Not Found", [("Content-Type", "text/html")])
        return [b"<h1>page</h1>"]

    with served_by_wsgiref(
        HitstreamWSGIMiddleware(app, client, trusted_proxies=["127.0.0.1/32"], skip_paths=["/static/"])
    ) as base_url:
        visit(base_url)
    assert client.flush(timeout=30)
    client.close()
    assert_pages_stored(client, real_redis, processes, tmp_path / "store")


def test_an_api_down_for_ten_seconds_loses_and_duplicates_nothing(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    api = processes.api(port=port)
    client = Client(api.url, ingest_token(real_redis), Options(batch_items=20, flush_interval=0.1))
    page_ids: list[str] = []
    raised: list[BaseException] = []
    stop = threading.Event()

    def application() -> None:
        """A backend sending ~100 pageviews/s all along, in a thread of its own."""
        number = 0
        while not stop.is_set():
            try:
                page_ids.append(client.send_pageview(f"https://example.com/p/{number}", VISITOR_IPS[1], BROWSER))
            except BaseException as error:
                raised.append(error)
            number += 1
            time.sleep(0.01)

    sending = threading.Thread(target=application, daemon=True)
    sending.start()
    wait_until(lambda: client.stats.delivered >= 100, 60, "pageviews to be delivered")
    api.kill()  # mid-request, as a crash: some batches may have been queued without an answer
    down_from, down_at = len(page_ids), time.monotonic()
    # The outage lasts ten seconds (the fault), and until the application has sent 300 more
    # pageviews meanwhile, unblocked, while the client retries what it holds.
    wait_until(lambda: len(page_ids) > down_from + 300 and client.stats.retries > 0, 120, "sends during the outage")
    time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
    restarted_at = len(page_ids)
    processes.api(port=port)
    # Back up: what was held through the outage gets through, and new pageviews with it.
    wait_until(lambda: client.stats.delivered >= restarted_at + 100, 120, "delivery to resume")
    stop.set()
    sending.join(10)

    assert client.flush(timeout=60)
    client.close()
    assert raised == []
    assert client.stats.retries > 0
    assert (client.stats.delivered, client.stats.dropped, client.stats.rejected) == (len(page_ids), 0, 0)

    store = tmp_path / "store"
    drain(real_redis, processes, store)
    pages, drops = stored_pages(store)
    assert (pages, drops) == (Counter(page_ids), {})
    assert set(pages.values()) == {1}


def test_events_sent_with_a_pages_id_land_in_the_store_beside_it(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api()
    client = Client(api.url, ingest_token(real_redis), QUICK)
    page_id = client.send_pageview("https://example.com/cart", VISITOR_IPS[2], BROWSER, language="en-GB")
    for name, properties in (("add_to_cart", {"sku": "A-1", "value": 19.5}), ("checkout", {"items": 2})):
        client.send_event(
            name,
            "https://example.com/cart",
            VISITOR_IPS[2],
            BROWSER,
            page_id=page_id,
            properties=properties,
            language="en-GB",
        )
    assert client.flush(timeout=30)
    client.close()
    assert (client.stats.delivered, client.stats.dropped, client.stats.rejected) == (3, 0, 0)

    store = tmp_path / "store"
    drain(real_redis, processes, store)
    pages, drops = stored_pages(store)
    assert (pages, drops) == (Counter({page_id: 1}), {})
    assert query_store(store, "SELECT toString(page_id), name, properties, language FROM events ORDER BY name") == [
        [page_id, "add_to_cart", {"sku": "A-1", "value": "19.5"}, "en-GB"],
        [page_id, "checkout", {"items": "2"}, "en-GB"],
    ]
