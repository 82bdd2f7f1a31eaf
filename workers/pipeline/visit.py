"""The working context of one envelope while it runs through the pipeline steps.

Steps read the envelope and the parsed visitor IP (``ip``, never the envelope's string) and
fill in ``row``. The last step clears ``ip``; the pipeline hands on only the row, which has
no IP field, and discards the Visit. The envelope itself stays the caller's, who hands it on
only through ``Envelope.without_ip()``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.envelope import Envelope
from workers.pipeline.networks import IPAddress
from workers.records import PageviewRow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_from_ms(milliseconds: int) -> datetime:
    """Exact to the millisecond (a float division would round some values)."""
    return _EPOCH + timedelta(milliseconds=milliseconds)


@dataclass(slots=True)
class Visit:
    envelope: Envelope
    ip: IPAddress | None
    row: PageviewRow

    @classmethod
    def start(cls, envelope: Envelope) -> Visit:
        ip = ipaddress.ip_address(envelope.visitor_ip) if envelope.visitor_ip else None
        row = PageviewRow(
            site_id=envelope.site_id,
            timestamp=utc_from_ms(envelope.timestamp_ms),
            received_at=utc_from_ms(envelope.received_ms),
            page_id=envelope.page_id,
            session_id=envelope.session_id,
        )
        return cls(envelope=envelope, ip=ip, row=row)


def forget_ip(visit: Visit) -> None:
    """The last step: the parsed IP leaves the working context before the row leaves it."""
    visit.ip = None
