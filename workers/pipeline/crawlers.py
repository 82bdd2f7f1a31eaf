"""The crawler step: which known crawler sent a request, and whether its address proves it.

A user agent that names a crawler (shared.crawlers.identity) makes a CrawlerHitRow beside the
pageview or event, and flags the pageview as a bot, so human figures leave it out even when
the user-agent step took it for a browser. The verdict (shared.crawlers.verification:
verified, spoofed, unverifiable) is reached here, the last moment the visitor IP is known;
only the verdict is stored. An AI fetch (kind "ai_fetch") becomes only its crawler hit, with
the status, content type, time and size its server reported. The API accepted it because
its user agent named a crawler; should the crawler table no longer know it when the worker
runs (a newer snapshot), the hit is kept under an empty name, unverifiable.

The step runs after the exclusion and spam steps, so a request they drop leaves no hit, and
after the geo step, whose country, ASN and provider the hit keeps.
"""

from __future__ import annotations

from shared.crawlers.snapshot import Crawlers
from shared.crawlers.verification import Verdict
from shared.envelope import FetchFacts
from workers.pipeline.visit import Visit
from workers.records import CrawlerHitRow

# Content types HitKeep files as documents (its ClassifyResourceType), media type only.
_DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "text/plain",
        "text/markdown",
    }
)
_HTML_TYPES = frozenset({"", "text/html", "application/xhtml+xml"})


def media_type(content_type: str | None) -> str:
    """``Text/HTML; charset=utf-8`` -> ``text/html``; "" when none was sent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def resource_type(media: str) -> str:
    """html, image, document or other, as HitKeep classifies a media type (none: html)."""
    if media in _HTML_TYPES:
        return "html"
    if media.startswith("image/"):
        return "image"
    if media in _DOCUMENT_TYPES:
        return "document"
    return "other"


class CrawlerHits:
    """The step, over this process's crawler knowledge (its ranges file is read again when
    ``hitstream crawlers update`` replaces it)."""

    def __init__(self, crawlers: Crawlers) -> None:
        self._crawlers = crawlers

    def record(self, visit: Visit) -> None:
        envelope = visit.envelope
        crawler = self._crawlers.identify(envelope.user_agent)
        if crawler is None:
            if envelope.kind == "ai_fetch":
                visit.crawler_hit = _hit(visit, "", "", "", False, Verdict.UNVERIFIABLE)
            return
        verdict = self._crawlers.verify(crawler, envelope.visitor_ip or "")
        visit.row.is_bot, visit.row.device_type = True, "bot"
        visit.crawler_hit = _hit(visit, crawler.name, crawler.operator, crawler.purpose.value, crawler.ai, verdict)


def _hit(visit: Visit, name: str, operator: str, purpose: str, ai: bool, verdict: Verdict) -> CrawlerHitRow:
    envelope, row = visit.envelope, visit.row
    hit = CrawlerHitRow(
        row.site_id,
        row.timestamp,
        row.received_at,
        row.page_id,
        envelope.kind,
        name,
        operator,
        purpose,
        ai,
        verdict.value,
        hostname=row.hostname,
        path=row.path,
        query=row.query,
        resource_type="html",  # a pageview or event is a page's
        country=row.country,
        asn=row.asn,
        provider=row.provider,
        user_agent=envelope.user_agent,
    )
    if envelope.fetch is not None:
        _add_fetch_facts(hit, envelope.fetch)
    return hit


def _add_fetch_facts(hit: CrawlerHitRow, fetch: FetchFacts) -> None:
    media = media_type(fetch["content_type"])
    hit.status_code = fetch["status_code"]
    hit.content_type = media
    hit.resource_type = resource_type(media)
    hit.response_ms = fetch["response_ms"] or 0
    hit.bytes_served = fetch["bytes_served"] or 0
