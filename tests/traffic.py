"""Pageview traffic for fault tests and the soak: post many pageviews concurrently through the
real API and record what each one was answered, keyed by the page_id the client chose.

Client-chosen page_ids make the exact count check possible: the set answered 202 is compared
with the page_ids found in Redis or in the store.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
import redis

from ingest_api.openapi import PAGEVIEW_PATH
from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site, site_for_domain
from shared.control.tokens import create_token
from shared.envelope import Envelope

# Distinctive visitor IPs (documentation ranges) that the privacy scan searches for.
VISITOR_IPS = (
    "198.51.100.77",
    "203.0.113.199",
    "2001:db8:beef::17",
    "2001:db8:beef:4242::abcd",
)
# Limits high enough that a fault test measures faults, not the rate limiter.
UNLIMITED = {"HITSTREAM_RATE_LIMIT": "1000000000", "HITSTREAM_RATE_BURST": "1000000000"}


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def queued_envelope(site_id: str, url: str, visitor_ip: str, site_domain: str = "example.com") -> Envelope:
    """An envelope as the API queues it (fresh ids, now), for tests that fill a lane directly."""
    now = int(time.time() * 1000)
    return Envelope(
        site_id=site_id,
        site_domain=site_domain,
        page_id=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        timestamp_ms=now,
        received_ms=now,
        url=url,
        visitor_ip=visitor_ip,
        user_agent=FIREFOX,
    )


def ingest_token(client: redis.Redis, domain: str = "example.com", bulk: bool = False) -> str:
    """A site for ``domain`` (added unless it exists) and the secret of a new token that owns
    it (a bulk-lane token with ``bulk``)."""
    site = site_for_domain(client, domain) or add_site(client, domain)
    secret, token = create_token(client, f"traffic {domain}", bulk=bulk)
    grant(client, token.id, site.id, "owner")
    return secret


def pageview(number: int, host: str = "example.com") -> tuple[str, bytes]:
    """A new page_id and a valid pageview body carrying it."""
    page_id = str(uuid.uuid4())
    body = {
        "url": f"https://{host}/p/{number % 500}?utm_source=fault",
        "timestamp": "2026-01-15T12:00:00Z",
        "visitor_ip": VISITOR_IPS[number % len(VISITOR_IPS)],
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "page_id": page_id,
    }
    return page_id, orjson.dumps(body)


@dataclass
class Answers:
    """What the API answered for each page_id: an HTTP status or a transport error's name."""

    by_page: dict[str, int | str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    # A request that saw 503 must also carry Retry-After, and answer within the Redis timeout.
    slowest_503: float = 0.0
    missing_retry_after: int = 0

    def accepted(self) -> set[str]:
        return {page for page, answer in self.by_page.items() if answer == 202}

    def summary(self) -> Counter[int | str]:
        return Counter(self.by_page.values())


class _Connection:
    """One keep-alive HTTP/1.1 connection. A hand-written client: httpx costs ~5 ms of CPU per
    request on a loaded CI machine, which made the client, not the API, the bottleneck."""

    def __init__(self, host: str, port: int, secret: str, timeout: float) -> None:
        self._address = (host, port)
        self._timeout = timeout
        self._head = (
            f"POST {PAGEVIEW_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> tuple[int, dict[str, str]]:
        """The status and headers (lower-case names); raises OSError or TimeoutError."""
        async with asyncio.timeout(self._timeout):
            if self._streams is None:
                self._streams = await asyncio.open_connection(*self._address)
            reader, writer = self._streams
            try:
                writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
                head = await reader.readuntil(b"\r\n\r\n")
                status_line, *lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines if ": " in line)
                headers = {name.lower(): value for name, value in headers.items()}
                await reader.readexactly(int(headers.get("content-length", "0")))
            except BaseException:
                self.close()
                raise
            if headers.get("connection", "").lower() == "close":
                self.close()
            return int(status_line.split(" ", 2)[1]), headers

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _post(connection: _Connection, page_id: str, body: bytes, answers: Answers) -> None:
    started = time.perf_counter()
    try:
        status, headers = await connection.post(body)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
        answers.by_page[page_id] = type(error).__name__
        return
    elapsed = time.perf_counter() - started
    answers.by_page[page_id] = status
    answers.latencies.append(elapsed)
    if status == 503:
        answers.slowest_503 = max(answers.slowest_503, elapsed)
        answers.missing_retry_after += "retry-after" not in headers


async def post_items(
    base_url: str,
    secret: str,
    items: Iterable[tuple[str, bytes]],
    concurrency: int = 50,
    answers: Answers | None = None,
    stop: threading.Event | None = None,
    timeout: float = 10.0,
) -> Answers:
    """Post each (page_id, body) of ``items`` once over ``concurrency`` connections (until
    ``stop`` is set); a page_id posted again gets its latest answer."""
    answers = answers if answers is not None else Answers()
    address = urlsplit(base_url)
    pending = iter(items)

    async def sender() -> None:
        connection = _Connection(address.hostname or "127.0.0.1", address.port or 80, secret, timeout)
        try:
            for page_id, body in pending:
                if stop is not None and stop.is_set():
                    return
                await _post(connection, page_id, body, answers)
        finally:
            connection.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return answers


async def post_pageviews(
    base_url: str,
    secret: str,
    count: int,
    concurrency: int = 50,
    answers: Answers | None = None,
    stop: threading.Event | None = None,
    timeout: float = 10.0,
) -> Answers:
    """Post ``count`` new pageviews over ``concurrency`` connections (until ``stop`` is set)."""
    items = (pageview(number) for number in range(count))
    return await post_items(base_url, secret, items, concurrency, answers, stop, timeout)


class BackgroundTraffic:
    """``post_pageviews`` in a thread, so a test can break things while pageviews flow."""

    def __init__(self, base_url: str, secret: str, count: int, concurrency: int = 50) -> None:
        self.answers = Answers()
        self.stop_event = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(base_url, secret, count, concurrency), daemon=True)
        self._thread.start()

    def _run(self, base_url: str, secret: str, count: int, concurrency: int) -> None:
        try:
            asyncio.run(post_pageviews(base_url, secret, count, concurrency, self.answers, self.stop_event))
        except BaseException as error:  # re-raised in the test thread by wait()
            self._error = error

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float = 120.0) -> Answers:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"traffic still running after {timeout} s"
        if self._error is not None:
            raise self._error
        return self.answers

    def stop(self) -> Answers:
        self.stop_event.set()
        return self.wait()


def queued_pages(client: redis.Redis) -> Counter[str]:
    """The page_ids waiting in the ingest stream, with multiplicity."""
    field = keys.ENVELOPE_FIELD.encode()
    return Counter(Envelope.from_json(fields[field]).page_id for _, fields in client.xrange(keys.STREAM))


@dataclass(frozen=True)
class Figures:
    """The exact count check of one fault run."""

    name: str
    sent: int
    accepted: int
    stored: int
    duplicated: int
    lost: int
    unanswered_but_stored: int  # the client saw an error, yet the pageview made it

    def report(self) -> str:
        line = (
            f"FIGURES {self.name}: sent={self.sent} accepted={self.accepted} stored={self.stored} "
            f"duplicated={self.duplicated} lost={self.lost} unanswered_but_stored={self.unanswered_but_stored}"
        )
        print("\n" + line)
        return line


def exact_count(name: str, answers: Answers, stored: Counter[str]) -> Figures:
    """Compare what was stored (or queued) with what was answered 202, and print the figures.

    Every 202 must be stored exactly once and nothing never sent may appear. A pageview the
    client got no 202 for (a connection error, a 503 after a timeout) may still be stored:
    the client cannot know, so it retries with the same page_id. Those are counted.
    """
    accepted = answers.accepted()
    figures = Figures(
        name=name,
        sent=len(answers.by_page),
        accepted=len(accepted),
        stored=sum(stored.values()),
        duplicated=sum(count - 1 for count in stored.values()),
        lost=len(accepted - stored.keys()),
        unanswered_but_stored=len(stored.keys() - accepted),
    )
    figures.report()
    assert stored.keys() <= answers.by_page.keys(), "stored page_ids that were never sent"
    return figures
