"""What the middleware records for a served page: which responses count, the page's URL
and the visitor's IP, the same for ASGI and WSGI.

A page is a request other than HEAD answered 2xx with an HTML content type, on a path not
skipped. The visitor IP is the socket peer, or the client that trusted proxies name in
X-Forwarded-For (shared.proxies, the rule the API itself applies); X-Forwarded-Proto and
X-Forwarded-Host are read from trusted proxies only. Bots are not filtered here: the user
agent goes with the pageview and the pipeline decides.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote

from hitstream.client.clients import AsyncClient, Client
from shared.proxies import Network, caller_ip, is_trusted

# Characters kept as they are in a recorded path: RFC 3986 pchar and "/" ("%" keeps escapes).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"

log = logging.getLogger("hitstream.client")

App = TypeVar("App")


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of a request the middleware reads, with lower-case header names."""

    method: str
    scheme: str
    path: str  # decoded
    raw_path: bytes  # as sent, or the decoded path encoded again
    query: bytes
    peer: str | None
    headers: dict[str, str]


class PageRecorder:
    """Sends a pageview for each served page through a ``Client`` or an ``AsyncClient``."""

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        trusted_proxies: Iterable[str | Network] = (),
        skip_paths: Iterable[str] = (),
        base_url: str | None = None,
    ) -> None:
        """``trusted_proxies``: CIDRs (or networks) of the proxies in front of the application;
        ``skip_paths``: path prefixes never recorded ("/static" skips "/static" and
        "/static/...", not "/statics"); ``base_url``: scheme and host to record pages under
        (e.g. "https://www.example.com") instead of the ones the request names."""
        self.client = client
        self._trusted = tuple(ipaddress.ip_network(network, strict=False) for network in trusted_proxies)
        self._skip = tuple(prefix.rstrip("/") for prefix in skip_paths)
        self._base_url = base_url.rstrip("/") if base_url else None

    def skipped(self, path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") or not prefix for prefix in self._skip)

    def record(self, request: Callable[[], RequestView], status: int, content_type: str | None) -> None:
        """One pageview if this response is a served page (``request`` is read only then);
        never raises: recording must not break the application's response."""
        try:
            if 200 <= status < 300 and is_html(content_type):
                self._record(request())
        except Exception:
            log.exception("hitstream client: could not record a page")

    def _record(self, request: RequestView) -> None:
        if request.method == "HEAD" or self.skipped(request.path):
            return
        headers = request.headers
        visitor_ip = caller_ip(request.peer, headers.get("x-forwarded-for"), self._trusted)
        if not visitor_ip:
            return  # a Unix socket without a trusted proxy: no visitor to record
        self.client.send_pageview(
            self._url(request),
            visitor_ip,
            headers.get("user-agent", ""),
            referrer=headers.get("referer") or None,
            language=first_language(headers.get("accept-language")),
            dnt=True if headers.get("dnt") == "1" else None,
        )

    def _url(self, request: RequestView) -> str:
        query = f"?{request.query.decode('latin-1')}" if request.query else ""
        path = quote(request.raw_path, safe=_PATH_SAFE)
        if self._base_url:
            return f"{self._base_url}{path}{query}"
        from_proxy = request.peer is not None and is_trusted(request.peer, self._trusted)
        headers = request.headers
        scheme = (headers.get("x-forwarded-proto") if from_proxy else None) or request.scheme
        host = (headers.get("x-forwarded-host") if from_proxy else None) or headers.get("host", "")
        return f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}{path}{query}"


class RecordingMiddleware(Generic[App]):
    """What the ASGI and the WSGI middleware hold: the application they wrap and a recorder."""

    def __init__(
        self,
        app: App,
        client: Client | AsyncClient,
        *,
        trusted_proxies: Iterable[str | Network] = (),
        skip_paths: Iterable[str] = (),
        base_url: str | None = None,
    ) -> None:
        """See PageRecorder for the options."""
        self.app = app
        self.recorder = PageRecorder(client, trusted_proxies=trusted_proxies, skip_paths=skip_paths, base_url=base_url)


def is_html(content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type in ("text/html", "application/xhtml+xml")


def first_language(accept_language: str | None) -> str | None:
    """The first language tag of Accept-Language ("de-CH,de;q=0.9" -> "de-CH"), or None."""
    if not accept_language:
        return None
    tag = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    return tag if tag and tag != "*" and len(tag) <= 64 else None
