"""WSGI middleware (Flask, Django, any WSGI app): a pageview per served HTML page.

    app.wsgi_app = HitstreamWSGIMiddleware(app.wsgi_app, Client(URL, TOKEN))       # Flask
    application = HitstreamWSGIMiddleware(get_wsgi_application(), Client(URL, TOKEN))  # Django wsgi.py

The pageview is queued when the application starts its response (status and content type
known). Use a threaded ``Client``: it delivers in the background and at exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hitstream.client.pages import RecordingMiddleware, RequestView

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# environ key -> the request header name pages.PageRecorder reads.
_READ_HEADERS = {
    "HTTP_HOST": "host",
    "HTTP_USER_AGENT": "user-agent",
    "HTTP_REFERER": "referer",
    "HTTP_ACCEPT_LANGUAGE": "accept-language",
    "HTTP_DNT": "dnt",
    "HTTP_X_FORWARDED_FOR": "x-forwarded-for",
    "HTTP_X_FORWARDED_PROTO": "x-forwarded-proto",
    "HTTP_X_FORWARDED_HOST": "x-forwarded-host",
}


class HitstreamWSGIMiddleware(RecordingMiddleware[WSGIApp]):
    """``HitstreamWSGIMiddleware(app, client, trusted_proxies=..., skip_paths=..., base_url=...)``
    (options: pages.PageRecorder)."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start_and_record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            content_type = next((value for name, value in headers if name.lower() == "content-type"), None)
            self.recorder.record(lambda: request_view(environ), int(status[:3]), content_type)
            return start_response(status, headers, exc_info)

        return self.app(environ, start_and_record)


def request_view(environ: dict[str, Any]) -> RequestView:
    # WSGI passes the path's bytes as latin-1 characters (PEP 3333).
    raw_path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    return RequestView(
        method=environ["REQUEST_METHOD"],
        scheme=environ.get("wsgi.url_scheme", "http"),
        path=raw_path.decode("utf-8", "replace"),
        raw_path=raw_path,
        query=environ.get("QUERY_STRING", "").encode("latin-1"),
        peer=environ.get("REMOTE_ADDR") or None,
        headers={name: environ[key] for key, name in _READ_HEADERS.items() if key in environ},
    )
