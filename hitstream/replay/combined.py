"""nginx/Apache combined access logs turned into pageviews.

Format: ``%h %l %u [%d/%b/%Y:%H:%M:%S %z] "%r" %>s %b "%{Referer}i" "%{User-agent}i"``
(fields appended after the user agent are ignored; ``%h`` may be IPv4 or IPv6). Only page
requests are kept: allowed methods and statuses, and paths without an asset extension. Lines
that do not parse are Malformed; lines filtered out are Skipped with the rule that dropped them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hitstream.replay.inputfile import open_binary
from hitstream.replay.records import Malformed, ReadResult, Sendable, Skipped
from hitstream.replay.sessions import Sessionizer

DEFAULT_METHODS = frozenset({"GET"})
DEFAULT_STATUSES = frozenset(range(200, 300))
DEFAULT_SKIP_EXTENSIONS = frozenset(
    "css js mjs map json xml txt png jpg jpeg gif svg ico webp avif bmp tif tiff "
    "woff woff2 ttf otf eot mp4 webm mp3 wav ogg m4a zip gz tar rar 7z".split()
)

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_LINE = re.compile(rf"(\S+) \S+ \S+ \[([^\]]+)\] {_QUOTED} (\d{{3}}) \S+ {_QUOTED} {_QUOTED}(?:\s.*)?")
_TIME = re.compile(r"(\d{2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")
_MONTHS = {
    name: number for number, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1)
}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")


@dataclass(frozen=True)
class LogFilter:
    methods: frozenset[str] = DEFAULT_METHODS
    statuses: frozenset[int] = DEFAULT_STATUSES
    skip_extensions: frozenset[str] = DEFAULT_SKIP_EXTENSIONS


def read_combined(
    path: Path, site_url: str, log_filter: LogFilter, sessions: Sessionizer | None
) -> Iterator[ReadResult]:
    site_root = site_url.rstrip("/")
    with open_binary(path) as file:
        for line, raw in enumerate(file, start=1):
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                yield Skipped(line, "blank line")
                continue
            yield parse_line(line, text, site_root, log_filter, sessions)


def parse_line(line: int, text: str, site_root: str, log_filter: LogFilter, sessions: Sessionizer | None) -> ReadResult:
    match = _LINE.fullmatch(text)
    if match is None:
        return Malformed(line, "not a combined log line")
    host, time_text, request, status_text, referrer, user_agent = match.groups()
    try:
        visitor_ip = str(ipaddress.ip_address(host))
    except ValueError:
        return Malformed(line, "client address is not an IP address")
    at = _parse_time(time_text)
    if at is None:
        return Malformed(line, "time is not [dd/Mon/yyyy:HH:MM:SS +zzzz]")
    status = int(status_text)
    if status not in log_filter.statuses:
        return Skipped(line, f"status {status}")
    parts = _unescape(request).split(" ")
    if len(parts) != 3 or not parts[1]:
        return Malformed(line, "request is not METHOD TARGET PROTOCOL")
    method, target, _protocol = parts
    if method not in log_filter.methods:
        return Skipped(line, f"method {method[:16]}")
    path_and_query = _origin_form(target)
    if path_and_query is None:
        return Malformed(line, "request target is not a path")
    extension = _extension(path_and_query)
    if extension in log_filter.skip_extensions:
        return Skipped(line, f"asset .{extension}")
    user_agent = _unescape(user_agent).strip()
    if user_agent in ("", "-"):
        return Skipped(line, "no user agent")
    body: dict[str, Any] = {
        "url": site_root + path_and_query,
        "timestamp": at.isoformat(),
        "visitor_ip": visitor_ip,
        "user_agent": user_agent,
    }
    referrer = _unescape(referrer).strip()
    if referrer not in ("", "-"):
        body["referrer"] = referrer
    if sessions is not None:
        body["session_id"] = sessions.session_id(visitor_ip, user_agent, at.timestamp())
    return Sendable(line, body)


def _parse_time(text: str) -> datetime | None:
    match = _TIME.fullmatch(text)
    if match is None or match.group(2) not in _MONTHS:
        return None
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    try:
        return datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=timezone(offset)
        )
    except ValueError:
        return None


def _origin_form(target: str) -> str | None:
    """The path and query of a request target; absolute-form targets (proxies) keep theirs."""
    if target.startswith("/"):
        return target
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return None


def _extension(path_and_query: str) -> str:
    path = path_and_query.split("?", 1)[0]
    last_segment = path.rsplit("/", 1)[-1]
    return last_segment.rsplit(".", 1)[-1].lower() if "." in last_segment else ""


def _unescape(text: str) -> str:
    """Undo the log's escaping: nginx writes ``\\xHH`` for bytes, Apache ``\\"`` and ``\\\\``."""
    if "\\" not in text:
        return text
    decoded = bytearray()
    position = 0
    for match in _ESCAPE.finditer(text):
        decoded += text[position : match.start()].encode()
        escape = match.group(1)
        if escape[0] == "x" and len(escape) == 3:
            decoded.append(int(escape[1:], 16))
        else:
            decoded += escape.encode()
        position = match.end()
    decoded += text[position:].encode()
    return decoded.decode("utf-8", "replace")
