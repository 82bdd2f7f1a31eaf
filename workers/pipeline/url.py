"""The page URL step: host, normalised path, query, and campaign fields from the query.

UTM values and ``hk_qr`` come only from the URL's query string (HitKeep's rule): the first
value of each key, trimmed, empty meaning none; ``hk_qr`` must be a UUID or it is dropped.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

from workers.pipeline.visit import Visit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
QR_KEY = "hk_qr"
_CAMPAIGN_KEYS = frozenset((*UTM_KEYS, QR_KEY))


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


def parse_page_url(visit: Visit) -> None:
    parts = urlsplit(visit.envelope.url)
    row = visit.row
    row.hostname = (parts.hostname or "").removesuffix(".")
    row.path = normalise_path(parts.path)
    row.query = parts.query
    campaign = campaign_values(parts.query)
    row.utm_source = campaign.get("utm_source")
    row.utm_medium = campaign.get("utm_medium")
    row.utm_campaign = campaign.get("utm_campaign")
    row.utm_term = campaign.get("utm_term")
    row.utm_content = campaign.get("utm_content")
    row.qr_id = qr_id(campaign.get(QR_KEY))
