"""The page URL step: host, normalised path, query, and campaign fields from the query.

UTM values and ``hk_qr`` come only from the URL's query string (HitKeep's rule): the first
value of each key, trimmed, empty meaning none; ``hk_qr`` must be a UUID or it is dropped.

A site's pageviews repeat the same few thousand URLs, and splitting one costs more than the
rest of the step, so whole results are kept in a bounded LRU cache keyed by the URL.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from workers.pipeline.visit import Visit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
QR_KEY = "hk_qr"
_CAMPAIGN_KEYS = frozenset((*UTM_KEYS, QR_KEY))
CACHE_SIZE = 16_384


def normalise_path(path: str) -> str:
    """``/`` when empty; repeated slashes collapsed; ``.`` and ``..`` segments resolved (never
    above the root); a trailing slash kept, since ``/blog/`` and ``/blog`` may differ.

    >>> normalise_path("//docs/./a/../b/")
    '/docs/b/'
    """
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    trailing = path.endswith(("/", "/.", "/..")) and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


def campaign_values(query: str) -> dict[str, str | None]:
    """The first value of each UTM key and ``hk_qr`` in ``query``; trimmed; empty → None."""
    values: dict[str, str | None] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _CAMPAIGN_KEYS and key not in values:
            values[key] = value.strip() or None
    return values


def qr_id(value: str | None) -> str | None:
    """``hk_qr`` in canonical UUID form, or None when it is not a UUID."""
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PageUrl:
    hostname: str
    path: str  # normalised
    query: str
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    qr_id: str | None


@functools.lru_cache(maxsize=CACHE_SIZE)
def split_page_url(url: str) -> PageUrl:
    parts = urlsplit(url)
    campaign = campaign_values(parts.query)
    return PageUrl(
        hostname=(parts.hostname or "").removesuffix("."),
        path=normalise_path(parts.path),
        query=parts.query,
        utm_source=campaign.get("utm_source"),
        utm_medium=campaign.get("utm_medium"),
        utm_campaign=campaign.get("utm_campaign"),
        utm_term=campaign.get("utm_term"),
        utm_content=campaign.get("utm_content"),
        qr_id=qr_id(campaign.get(QR_KEY)),
    )


def parse_page_url(visit: Visit) -> None:
    page, row = split_page_url(visit.envelope.url), visit.row
    row.hostname = page.hostname
    row.path = page.path
    row.query = page.query
    row.utm_source = page.utm_source
    row.utm_medium = page.utm_medium
    row.utm_campaign = page.utm_campaign
    row.utm_term = page.utm_term
    row.utm_content = page.utm_content
    row.qr_id = page.qr_id
