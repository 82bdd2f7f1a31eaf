"""Session ids for access-log replay: one visitor is (site, IP, user agent), and a session
ends after 30 minutes without a request from that visitor.

Computed in the replay process only. The IP is kept only as part of a SHA-256 digest in
memory, and the session id is a UUIDv5 of the site, that digest and the session's start time,
so neither the id nor anything sent carries the IP (apart from the visitor_ip field the
endpoint requires). Lines must be roughly time-ordered, as access logs are: a line more than
the inactivity gap away from the visitor's previous line starts a new session, whichever
direction the gap goes.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

SESSION_NAMESPACE = uuid.UUID("0b7c5d2a-93e4-5f61-8a2d-47c9e1f03b58")
INACTIVITY_SECONDS = 30 * 60
# Forget visitors idle for longer than the gap every this many lines, bounding memory.
SWEEP_EVERY = 100_000


@dataclass(slots=True)
class _Visit:
    session_id: str
    last_seen: float


class Sessionizer:
    def __init__(self, site: str, inactivity_seconds: float = INACTIVITY_SECONDS) -> None:
        self._site = site
        self._gap = inactivity_seconds
        self._visits: dict[bytes, _Visit] = {}
        self._latest = float("-inf")
        self._seen = 0

    def session_id(self, visitor_ip: str, user_agent: str, at: float) -> str:
        """The session of a request at ``at`` (seconds since the epoch)."""
        visitor = hashlib.sha256(f"{visitor_ip}\0{user_agent}".encode()).digest()
        visit = self._visits.get(visitor)
        if visit is None or abs(at - visit.last_seen) > self._gap:
            name = f"{self._site}\0{visitor.hex()}\0{at!r}"
            visit = _Visit(str(uuid.uuid5(SESSION_NAMESPACE, name)), at)
            self._visits[visitor] = visit
        visit.last_seen = max(visit.last_seen, at)
        self._latest = max(self._latest, at)
        self._seen += 1
        if self._seen % SWEEP_EVERY == 0:
            self._forget_idle()
        return visit.session_id

    def _forget_idle(self) -> None:
        horizon = self._latest - self._gap
        self._visits = {key: v for key, v in self._visits.items() if v.last_seen >= horizon}
