"""The working context of one envelope while it runs through the pipeline steps.

Steps read the envelope and the parsed visitor IP (``ip``, never the envelope's string) and
fill in ``row``: a PageviewRow, or an EventRow for an event envelope (an AI fetch's row is
the working copy its crawler hit is made from, never stored). The crawler step sets
``crawler_hit`` when a known crawler sent the request. The last step clears ``ip``; the
pipeline hands on only the rows, which have no IP field, and discards the Visit.
The envelope itself stays the caller's, who hands it on only through
``Envelope.without_ip()``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.envelope import Envelope
from shared.networks import IPAddress
from workers.pipeline.events import event_name, property_texts
from workers.records import CrawlerHitRow, EventRow, PageviewRow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Parsing an address costs ~10 µs and most visitors send several pageviews, so parsed
# addresses are kept in a bounded LRU cache keyed by the IP string. It lives only in this
# worker process's memory: nothing logs, dumps or persists it, and entries fall out as new
# visitors arrive.
IP_CACHE_SIZE = 32_768
parse_ip = functools.lru_cache(maxsize=IP_CACHE_SIZE)(ipaddress.ip_address)


def utc_from_ms(milliseconds: int) -> datetime:
    """Exact to the millisecond (a float division would round some values)."""
    return _EPOCH + timedelta(milliseconds=milliseconds)


def _new_row(envelope: Envelope) -> PageviewRow:
    """An empty row of the envelope's kind with its identity and times filled in."""
    timestamp, received_at = utc_from_ms(envelope.timestamp_ms), utc_from_ms(envelope.received_ms)
    if envelope.kind in ("pageview", "ai_fetch"):
        return PageviewRow(envelope.site_id, timestamp, received_at, envelope.page_id, envelope.session_id)
    if envelope.kind == "event":
        row = EventRow(envelope.site_id, timestamp, received_at, envelope.page_id, envelope.session_id)
        row.name = event_name(envelope.event_name)
        row.properties = property_texts(envelope.event_properties)
        return row
    raise ValueError(f"kind: unknown envelope kind {envelope.kind!r}")


@dataclass(slots=True)
class Visit:
    envelope: Envelope
    ip: IPAddress | None
    row: PageviewRow
    crawler_hit: CrawlerHitRow | None = None

    @classmethod
    def start(cls, envelope: Envelope) -> Visit:
        ip = parse_ip(envelope.visitor_ip) if envelope.visitor_ip else None
        return cls(envelope, ip, _new_row(envelope))


def forget_ip(visit: Visit) -> None:
    """The last step: the parsed IP leaves the working context before the row leaves it."""
    visit.ip = None
