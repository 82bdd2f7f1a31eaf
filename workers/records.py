"""What the enrichment pipeline produces and the store inserts.

The pipeline (workers.pipeline) turns each Envelope into rows (a PageviewRow or EventRow,
plus a CrawlerHitRow when a known crawler sent it; an AI-fetch envelope only the
CrawlerHitRow) or a Drop; the store (workers.store) inserts rows and drop counts. Field
order here is the column order of each table. There is deliberately no IP field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime


class DropReason(enum.StrEnum):
    """Why a pageview was not stored. A closed set: counted per site, reason and minute.
    (dnt is no reason here: the API answers 202 and never queues such pageviews.)"""

    INSTANCE_CIDR = "instance_cidr"
    INSTANCE_COUNTRY = "instance_country"
    INSTANCE_USER_AGENT = "instance_user_agent"
    INSTANCE_PATH = "instance_path"
    SITE_CIDR = "site_cidr"
    SITE_COUNTRY = "site_country"
    SITE_USER_AGENT = "site_user_agent"
    SITE_PATH = "site_path"
    SPAMHAUS_DROP = "spamhaus_drop"
    SPAM_REFERRER = "spam_referrer"


@dataclass(frozen=True, slots=True)
class Drop:
    site_id: str
    reason: DropReason
    timestamp: datetime  # the pageview's time (UTC); counted per minute


@dataclass(slots=True)
class PageviewRow:
    site_id: str
    timestamp: datetime  # UTC, millisecond precision
    received_at: datetime
    page_id: str
    session_id: str
    hostname: str = ""
    path: str = "/"
    query: str = ""
    referrer: str = ""
    referrer_host: str = ""
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    qr_id: str | None = None  # hk_qr, a UUID
    country: str = ""  # ISO 3166-1 alpha-2
    region_code: str = ""  # ISO 3166-2 subdivision code, e.g. "BY"
    region_name: str = ""
    city: str = ""
    asn: int = 0
    provider: str = ""  # AS organisation
    user_agent: str = ""
    browser: str = ""
    browser_version: str = ""  # major version
    os: str = ""
    os_version: str = ""
    device_type: str = "other"  # desktop, mobile, tablet, bot, other
    is_bot: bool = False
    language: str = ""
    screen_width: int = 0
    screen_height: int = 0
    viewport_width: int = 0
    viewport_height: int = 0


@dataclass(slots=True)
class EventRow(PageviewRow):
    """A custom event (``POST /api/ingest/server/event``): a pageview's context plus a name and
    flat properties. Stored in the ``events`` table; property values are kept as strings."""

    name: str = ""
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CrawlerHitRow:
    """One request of a known crawler (``crawler_hits`` table): from a pageview or event whose
    user agent names one, or from ``POST /api/sites/{id}/ingest/ai-fetch``. The verdict was
    reached while the pipeline still held the address (shared.crawlers.verification)."""

    site_id: str
    timestamp: datetime  # UTC, millisecond precision
    received_at: datetime
    hit_id: str  # the pageview's or event's page_id; a generated UUID for an AI fetch
    source: str  # pageview, event, ai_fetch
    crawler: str  # the crawler's name, e.g. GPTBot
    operator: str  # who runs it, e.g. OpenAI
    purpose: str  # shared.crawlers.identity.Purpose
    ai: bool
    verdict: str  # verified, spoofed, unverifiable
    hostname: str = ""
    path: str = "/"
    query: str = ""
    status_code: int = 0  # 0: unknown (a pageview says nothing of the response)
    resource_type: str = ""  # html, image, document, other; "" unknown
    content_type: str = ""
    response_ms: int = 0
    bytes_served: int = 0
    country: str = ""
    asn: int = 0
    provider: str = ""
    user_agent: str = ""


StoredRow = PageviewRow | CrawlerHitRow  # EventRow is a PageviewRow

PAGEVIEW_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(PageviewRow))
EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EventRow))
CRAWLER_HIT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CrawlerHitRow))
