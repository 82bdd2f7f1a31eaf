"""HitKeep's AI-fetch endpoint, ``POST /api/sites/{id}/ingest/ai-fetch``: an edge or origin
server reports one request a crawler made (path, hostname, status, content type, time, size,
user agent), and ``/api/sites/{id}/ingest/ai-fetches`` (ours) up to 1000 of them.

The site is the one named in the path (``Invalid site_id`` when it is no UUID; the layout
ingest_api.site_in_path hands it to each item), not one found by a url's host; the token
needs ``site.manage_data`` there, as for a pageview. The item's
checks, first failure decides, with HitKeep's messages: the body (a JSON object, each field's
type), ``status_code`` (100-599, absent included), ``user_agent`` (a crawler hitstream knows:
shared.crawlers.identity, which holds HitKeep's 22 AI bots and every other known crawler), then
``path`` (required); then our own: hostname, timestamp, visitor_ip and the fields' bounds.

What HitKeep decides at the door is decided by the worker here, the pipeline of pageviews:
exclusions (address and country need ``visitor_ip``, the crawler's address, where HitKeep
compares the caller's, i.e. the edge server's) and the Spamhaus DROP list answer 202 and store
nothing. The envelope (kind "ai_fetch") takes the lanes, the durability and the exactly-once
hand-off of pageviews; the worker turns it into a crawler hit with the verdict on its address.

The crawler table is built on a process's first AI fetch (~0.2 s, ~14 MB of patterns, measured
once on the shared 2-core machine), not at start: API processes that never see one, and the
test suite's hundreds of in-process apps, do without it.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ingest_api import errors
from ingest_api.errors import BadRequest
from ingest_api.fields import AI_FETCH_BODY, MAX_BYTES_SERVED, MAX_RESPONSE_MS, max_length, names
from ingest_api.validation import (
    DIMENSION_FIELDS,
    ValidatedBody,
    check_types,
    checked_timestamp,
    checked_visitor_ip,
    fields_of,
    type_checks,
)
from shared.crawlers.identity import identify
from shared.envelope import FetchFacts
from shared.storable import STATUS_CODE_RANGE

AI_FETCH_PATH = "/api/sites/{site_id}/ingest/ai-fetch"
AI_FETCH_BATCH_PATH = "/api/sites/{site_id}/ingest/ai-fetches"

AI_FETCH_FIELDS = frozenset(names(AI_FETCH_BODY))
_TYPE_CHECKS = type_checks(AI_FETCH_BODY)
MAX_PATH_CHARS = max_length(AI_FETCH_BODY, "path")
MAX_HOSTNAME_CHARS = max_length(AI_FETCH_BODY, "hostname")
MAX_CONTENT_TYPE_CHARS = max_length(AI_FETCH_BODY, "content_type")
MAX_USER_AGENT_CHARS = max_length(AI_FETCH_BODY, "user_agent")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PATH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_HOSTNAME_FORBIDDEN = re.compile(r"[\x00-\x20\x7f/?#@\\]")
_NO_DIMENSIONS: dict[str, int | None] = dict.fromkeys(DIMENSION_FIELDS)  # read only: the envelope's sizes


class SiteItem(NamedTuple):
    """A decoded item with the site id its request's path names."""

    site_id: str
    item: Any


def path_site_id(path: str) -> str:
    """The site id of ``/api/sites/{id}/...`` in lower case; BadRequest ``Invalid site_id``."""
    site_id = path.split("/")[3]  # "", "api", "sites", id, ...: the route matched that shape
    if not _UUID.fullmatch(site_id):
        raise BadRequest(errors.INVALID_SITE_ID)
    return site_id.lower()


def ai_fetch_from(site_item: SiteItem, now_ms: int) -> ValidatedBody:
    """Validate one decoded AI fetch (a request body, or a batch item) for the path's site."""
    values = fields_of(site_item.item, AI_FETCH_FIELDS)
    check_types(values, _TYPE_CHECKS)
    status_code = values.get("status_code") or 0
    if not STATUS_CODE_RANGE[0] <= status_code <= STATUS_CODE_RANGE[1]:
        raise BadRequest(errors.BAD_STATUS_CODE)
    user_agent = (values.get("user_agent") or "").strip()
    if len(user_agent) > MAX_USER_AGENT_CHARS:  # before the crawler table reads it
        raise BadRequest(errors.too_long("user_agent", MAX_USER_AGENT_CHARS))
    if not user_agent or identify(user_agent) is None:
        raise BadRequest(errors.UNKNOWN_CRAWLER)
    url, hostname = _target(values.get("path"), values.get("hostname"))
    timestamp = values.get("timestamp")
    visitor_ip = values.get("visitor_ip")
    return ValidatedBody(
        url=url,
        host=hostname,
        timestamp_ms=now_ms if timestamp is None else checked_timestamp(timestamp, now_ms),
        visitor_ip=None if visitor_ip is None else checked_visitor_ip(visitor_ip),
        user_agent=user_agent,
        page_id=values.get("fetch_id"),
        session_id=None,
        referrer=None,
        language=None,
        dimensions=_NO_DIMENSIONS,
        dnt=False,
        kind="ai_fetch",
        site_id=site_item.site_id,
        fetch=FetchFacts(
            status_code=status_code,
            content_type=_content_type(values.get("content_type")),
            response_ms=_reported(values, "response_ms", MAX_RESPONSE_MS),
            bytes_served=_reported(values, "bytes_served", MAX_BYTES_SERVED),
        ),
    )


def _target(path: str | None, hostname: str | None) -> tuple[str, str]:
    """The URL the worker's url step reads (``//host/path?query``, or the path alone) and the
    host, as HitKeep's normalizeFetchTarget reads path and hostname."""
    path, host = (path or "").strip(), (hostname or "").strip().lower()
    if len(host) > MAX_HOSTNAME_CHARS:
        raise BadRequest(errors.too_long("hostname", MAX_HOSTNAME_CHARS))
    if _HOSTNAME_FORBIDDEN.search(host):
        raise BadRequest(errors.BAD_HOSTNAME)
    if len(path) > MAX_PATH_CHARS:
        raise BadRequest(errors.too_long("path", MAX_PATH_CHARS))
    if _PATH_FORBIDDEN.search(path):
        raise BadRequest(errors.BAD_PATH)
    try:
        parts = urlsplit(path)
    except ValueError:
        parts = None
    if parts is not None and parts.netloc and parts.hostname:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = host or parts.hostname
    if not path:
        raise BadRequest(errors.MISSING_PATH)
    if not path.startswith("/"):
        path = "/" + path
    url = f"//{host}{path}" if host else path
    try:
        urlsplit(url).hostname  # noqa: B018 - what the worker's url step reads must parse ("[::1")
    except ValueError:
        raise BadRequest(errors.BAD_HOSTNAME) from None
    return url, host


def _content_type(value: str | None) -> str | None:
    text = (value or "").strip()
    if len(text) > MAX_CONTENT_TYPE_CHARS:
        raise BadRequest(errors.too_long("content_type", MAX_CONTENT_TYPE_CHARS))
    return text or None


def _reported(values: dict[str, Any], name: str, maximum: int) -> int | None:
    """A time or size, None when not reported (absent, or 0 or less as HitKeep reads it)."""
    value: int | None = values.get(name)
    if value is not None and value > maximum:
        raise BadRequest(errors.out_of_range(name, 0, maximum))
    return value if value is not None and value > 0 else None
