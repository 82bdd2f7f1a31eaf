"""``POST /api/ingest/server/pageview``: check a pageview and hand it to Redis.

Checks run in HitKeep's order (hitkeep-behaviour.md): token, body, url, timestamp,
visitor_ip, user_agent, site, grant, dnt. The rate limit comes first in effect: a request
refused by a later check is still charged to its bucket (one Redis round trip on that error
path), so once the budget is spent every request gets 429, whatever else is wrong with it.
"""

from __future__ import annotations

import hashlib
import time
import uuid

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ingest_api import errors
from ingest_api.access import Access, presented_secret
from ingest_api.errors import ApiError, BadRequest, error_response
from ingest_api.handoff import HandOff, Outcome, Unavailable, Verdict
from ingest_api.metrics import Metrics
from ingest_api.proxies import Network, caller_ip
from ingest_api.validation import MAX_BODY_BYTES, Pageview, parse_pageview
from shared.control.tokens import ApiToken
from shared.envelope import Envelope

UNAVAILABLE_RETRY_AFTER_SECONDS = 1


class PageviewEndpoint:
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

    async def handle(self, request: Request) -> Response:
        try:
            return await self._ingest(request)
        except Unavailable:
            retry_after = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
            return error_response(ApiError(503, errors.SERVICE_NOT_AVAILABLE, retry_after))

    async def _ingest(self, request: Request) -> Response:
        received_ms = time.time_ns() // 1_000_000
        secret = presented_secret(request.headers)
        token = await self._access.usable_token(secret) if secret else None
        try:
            envelope = await self._envelope(request, token, received_ms)
        except ApiError as refusal:
            verdict = await self._handoff.admit(self._rate_subject(request, token))
            return self._answer(verdict, refusal)
        if envelope is None:  # dnt: charged like any request, nothing queued
            return self._answer(await self._handoff.admit(self._rate_subject(request, token)))
        serialised = envelope.to_json()
        started = time.perf_counter()
        try:
            verdict = await self._handoff.admit(self._rate_subject(request, token), [serialised])
        finally:  # timeouts count too: they are what the histogram is for
            self._metrics.handoff_seconds.observe(time.perf_counter() - started)
        return self._answer(verdict)

    async def _envelope(self, request: Request, token: ApiToken | None, received_ms: int) -> Envelope | None:
        """The envelope to queue; None for dnt. Raises ApiError for the first failed check."""
        if token is None:
            raise ApiError(401, errors.UNAUTHORIZED)
        pageview = parse_pageview(await _body(request), received_ms)
        site = await self._access.site(pageview.host)
        if site is None:
            raise ApiError(404, errors.SITE_NOT_FOUND)
        request.state.site_id = site.id  # for the request log line
        if not await self._access.may_manage_data(token, site):
            raise ApiError(403, errors.ACCESS_DENIED)
        if pageview.dnt:
            return None
        return _to_envelope(pageview, site.id, site.domain, received_ms)

    def _rate_subject(self, request: Request, token: ApiToken | None) -> str:
        """A known token's own bucket; otherwise the caller's (its IP, hashed: keys hold no IPs)."""
        if token is not None:
            return f"token:{token.id}"
        peer = request.client.host if request.client else None
        caller = caller_ip(peer, request.headers.get("x-forwarded-for"), self._trusted_proxies)
        return "ip:" + hashlib.sha256(caller.encode()).hexdigest()[:32]

    def _answer(self, verdict: Verdict, refusal: ApiError | None = None) -> Response:
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
        if refusal is not None:
            refusal.headers.update(headers)
            return error_response(refusal)
        return Response(status_code=202, headers=headers)


async def _body(request: Request) -> bytes:
    """The body, read no further than one byte past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest()
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest()
    except ClientDisconnect:
        raise BadRequest() from None  # nobody is left to read the answer
    return bytes(body)


def _to_envelope(pageview: Pageview, site_id: str, site_domain: str, received_ms: int) -> Envelope:
    return Envelope(
        site_id=site_id,
        site_domain=site_domain,
        page_id=pageview.page_id or str(uuid.uuid4()),
        session_id=pageview.session_id or str(uuid.uuid4()),
        timestamp_ms=pageview.timestamp_ms,
        received_ms=received_ms,
        url=pageview.url,
        visitor_ip=pageview.visitor_ip,
        user_agent=pageview.user_agent,
        referrer=pageview.referrer,
        language=pageview.language,
        **pageview.dimensions,
    )
