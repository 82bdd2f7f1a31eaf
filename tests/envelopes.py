"""Envelopes for pipeline tests: one valid pageview from London to mysite.example, with any
field overridden (``envelope(url=..., visitor_ip=...)``)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.envelope import Envelope
from tests import geoip_fixtures as geo

SITE_ID = "5f0c6d1e-4a53-4a8e-9a57-3c0d7f0e2b11"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
PAGE_TIME = datetime(2026, 4, 15, 12, 0, 0, 123000, tzinfo=UTC)


def envelope(**overrides: object) -> Envelope:
    values: dict[str, object] = {
        "site_id": SITE_ID,
        "site_domain": "mysite.example",
        "page_id": "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0",
        "session_id": "7d4f1c2a-8b3e-4f5a-9c6d-0e1f2a3b4c5d",
        "timestamp_ms": int(PAGE_TIME.timestamp() * 1000),
        "received_ms": int(PAGE_TIME.timestamp() * 1000) + 5,
        "url": "https://mysite.example/",
        "visitor_ip": geo.LONDON_IPV4,
        "user_agent": CHROME_WINDOWS,
    }
    values.update(overrides)
    return Envelope(**values)  # type: ignore[arg-type]
