"""What every ingest endpoint shares: the caller's token and rate subject, the site and grant
of a validated pageview, its envelope, the hand-off, and the answer with its rate headers.

The rate limit comes first in effect: a request refused by a later check is still charged to
its bucket (one Redis round trip on that error path), so once the budget is spent every
request gets 429, whatever else is wrong with it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ingest_api import errors
from ingest_api.access import Access, presented_secret
from ingest_api.errors import ApiError, error_response
from ingest_api.handoff import (
    HandOff,
    Outcome,
    Queued,
    StoredAnswer,
    Unavailable,
    Verdict,
)
from ingest_api.metrics import Metrics
from ingest_api.proxies import Network, caller_ip
from ingest_api.validation import Pageview
from shared import keys
from shared.control.sites import Site
from shared.control.tokens import ApiToken
from shared.envelope import Envelope

UNAVAILABLE_RETRY_AFTER_SECONDS = 1


def service_unavailable() -> Response:
    retry_after = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
    return error_response(ApiError(503, errors.SERVICE_NOT_AVAILABLE, retry_after))


async def read_body(request: Request, limit: int, too_large: ApiError) -> bytes:
    """The body, read no further than one byte past ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise errors.BadRequest() from None  # nobody is left to read the answer
    return bytes(body)


class Intake:
    def __init__(
        self,
        access: Access,
        handoff: HandOff,
        metrics: Metrics,
        rate_burst: int,
        trusted_proxies: tuple[Network, ...],
    ) -> None:
        self._access = access
        self._handoff = handoff
        self._metrics = metrics
        self._rate_burst = str(rate_burst)
        self._trusted_proxies = trusted_proxies

    async def token(self, request: Request) -> ApiToken | None:
        secret = presented_secret(request.headers)
        return await self._access.usable_token(secret) if secret else None

    def rate_subject(self, request: Request, token: ApiToken | None) -> str:
        """A known token's own bucket; otherwise the caller's (its IP, hashed: keys hold no IPs)."""
        if token is not None:
            return f"token:{token.id}"
        peer = request.client.host if request.client else None
        caller = caller_ip(
            peer, request.headers.get("x-forwarded-for"), self._trusted_proxies
        )
        return "ip:" + hashlib.sha256(caller.encode()).hexdigest()[:32]

    async def site(self, token: ApiToken, pageview: Pageview) -> Site:
        """The pageview's site, if the token may write there; else ApiError 404 or 403."""
        site = await self._access.site(pageview.host)
        if site is None:
            raise ApiError(404, errors.SITE_NOT_FOUND)
        if not await self._access.may_manage_data(token, site):
            raise ApiError(403, errors.ACCESS_DENIED)
        return site

    async def admit(
        self,
        subject: str,
        queued: Sequence[Queued] = (),
        cost: int = 1,
        answer: StoredAnswer | None = None,
    ) -> Verdict:
        if not queued:
            return await self._handoff.admit(subject, queued, cost, answer)
        started = time.perf_counter()
        try:
            return await self._handoff.admit(subject, queued, cost, answer)
        finally:  # timeouts count too: they are what the histogram is for
            self._metrics.handoff_seconds.observe(time.perf_counter() - started)

    def answer(self, verdict: Verdict, admitted: Response) -> Response:
        """``admitted`` with the rate headers, unless the verdict refused the request."""
        headers = {
            "RateLimit-Limit": self._rate_burst,
            "RateLimit-Remaining": str(verdict.remaining),
            "RateLimit-Reset": str(verdict.reset_seconds),
        }
        if verdict.outcome is Outcome.RATE_LIMITED:
            headers["Retry-After"] = str(verdict.retry_after_seconds)
            return error_response(ApiError(429, errors.TOO_MANY_REQUESTS, headers))
        if verdict.outcome is Outcome.QUEUE_FULL:
            raise Unavailable("the ingest queue is at its maximum depth")
        admitted.headers.update(headers)
        return admitted


def queued(pageview: Pageview, site: Site, received_ms: int) -> Queued:
    """The envelope to hand off, guarded by a seen key when the client chose its page_id."""
    envelope = Envelope(
        site_id=site.id,
        site_domain=site.domain,
        page_id=pageview.page_id or str(uuid.uuid4()),
        session_id=pageview.session_id or str(uuid.uuid4()),
        timestamp_ms=pageview.timestamp_ms,
        received_ms=received_ms,
        url=pageview.url,
        visitor_ip=pageview.visitor_ip,
        user_agent=pageview.user_agent,
        referrer=pageview.referrer,
        language=pageview.language,
        kind="pageview" if pageview.event_name is None else "event",
        event_name=pageview.event_name,
        event_properties=pageview.event_properties,
        **pageview.dimensions,
    )
    if pageview.page_id is None:
        return Queued(envelope.to_json())
    seen_key = keys.SEEN.format(
        kind=envelope.kind, site_id=site.id, page_id=pageview.page_id
    )
    return Queued(envelope.to_json(), seen_key)
