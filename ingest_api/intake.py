"""What every ingest endpoint shares: the caller's token and rate subject, its lane, the site
and grant of a validated body, its envelope, the hand-off, and the answer with its rate
headers.

The lane is the token's (shared.lanes): a bulk token's pageviews always go to the bulk lane;
``X-Hitstream-Lane: bulk`` is a replay's explicit ask for it, refused (403) for a live token,
which may not use the bulk lane's larger cap. A full lane, or a token's full share of it,
answers 503 with Retry-After to that lane's or token's requests only.

The rate limit comes first in effect: a request refused by a later check is still charged to
its bucket (one Redis round trip on that error path), so once the budget is spent every
request gets 429, whatever else is wrong with it. While a subject's bucket is known not to
hold a request's cost (ingest_api.empty_buckets) the endpoints answer 429 without a Redis call,
before reading the body.
"""

from __future__ import annotations

import hashlib

import orjson

from ingest_api import errors
from ingest_api.access import Access, presented_secret
from ingest_api.answer import Answer
from ingest_api.empty_buckets import EmptyBuckets
from ingest_api.errors import ApiError, error_response
from ingest_api.front import UNAVAILABLE_RETRY_AFTER_SECONDS
from ingest_api.handoff import (
    HandOff,
    Outcome,
    Queued,
    Unavailable,
    Verdict,
)
from ingest_api.ids import new_uuid4
from ingest_api.request import IngestRequest
from ingest_api.validation import ValidatedBody
from shared import keys
from shared.control.sites import Site
from shared.control.tokens import ApiToken
from shared.envelope import ENVELOPE_VERSION
from shared.lanes import LANE_HEADER, Lane
from shared.proxies import Network, caller_ip

_LANE_HEADER = LANE_HEADER.lower()
BAD_LANE = f"{LANE_HEADER} must be live or bulk"
LIVE_TOKEN_IN_BULK = f"{LANE_HEADER}: bulk needs a bulk token (hitstream tokens create --bulk)"
BULK_TOKEN_IN_LIVE = f"{LANE_HEADER}: live is not open to a bulk token"
# A full lane answers like Redis being unavailable (HitKeep's text); a full share says why, as
# it concerns one token only.
TOKEN_SHARE_FULL = f"{errors.SERVICE_NOT_AVAILABLE}: this token's share of its lane's queue is full"
_TOKEN_SHARE_FULL = error_response(
    ApiError(503, TOKEN_SHARE_FULL, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
)


class Intake:
    def __init__(
        self,
        access: Access,
        handoff: HandOff,
        rate_burst: int,
        trusted_proxies: tuple[Network, ...],
        empty_buckets: EmptyBuckets,
    ) -> None:
        self._access = access
        self.admit = handoff.admit  # endpoints await its verdict (ingest_api.handoff)
        self._empty_buckets = empty_buckets
        # The 429 for a request of a given cost (default 1) that the subject's bucket is known
        # not to hold, else None: endpoints ask before reading the body, the batch endpoint
        # again once it has counted the items.
        self.throttled = empty_buckets.refusal
        self._rate_limit_header = (b"ratelimit-limit", str(rate_burst).encode())
        self._trusted_proxies = trusted_proxies

    async def caller(self, request: IngestRequest) -> tuple[ApiToken | None, str]:
        """The usable token (None: missing, unknown, revoked or expired) and the caller's
        rate-limit subject."""
        secret = presented_secret(request.headers)
        token = await self._access.usable_token(secret) if secret else None
        return token, self.rate_subject(request, token)

    def token_and_lane(self, request: IngestRequest, token: ApiToken | None) -> tuple[ApiToken, Lane]:
        """The caller's token and its lane, the first checks after the rate limit: ApiError 401
        without a usable token, 400 for an unknown X-Hitstream-Lane, 403 for one that is not the
        token's."""
        if token is None:
            raise ApiError(401, errors.UNAUTHORIZED)
        asked = request.headers.get(_LANE_HEADER)
        lane = Lane.BULK if token.bulk else Lane.LIVE
        if asked is None or asked.strip().lower() == lane:
            return token, lane
        if asked.strip().lower() not in tuple(Lane):
            raise ApiError(400, BAD_LANE)
        raise ApiError(403, BULK_TOKEN_IN_LIVE if token.bulk else LIVE_TOKEN_IN_BULK)

    async def refuse(self, subject: str, refusal: ApiError) -> Answer:
        """A refused request's answer; it is charged first, so a spent budget answers 429."""
        return self.answer(subject, await self.admit(subject), error_response(refusal))

    def rate_subject(self, request: IngestRequest, token: ApiToken | None) -> str:
        """A known token's own bucket; otherwise the caller's (its IP, hashed: keys hold no IPs)."""
        if token is not None:
            return f"token:{token.id}"
        caller = caller_ip(request.peer, request.headers.get("x-forwarded-for"), self._trusted_proxies)
        return "ip:" + hashlib.sha256(caller.encode()).hexdigest()[:32]

    async def site(self, token: ApiToken, validated: ValidatedBody) -> Site:
        """The site of the body's url, if the token may write there; else ApiError 404 or 403."""
        site, may_manage_data = await self._access.site_for(token, validated.host)
        if site is None:
            raise ApiError(404, errors.SITE_NOT_FOUND)
        if not may_manage_data:
            raise ApiError(403, errors.ACCESS_DENIED)
        return site

    def answer(self, subject: str, verdict: Verdict, admitted: Answer) -> Answer:
        """``admitted`` with the rate headers, unless the verdict refused the request."""
        if verdict.outcome is Outcome.RATE_LIMITED:
            self._empty_buckets.note(subject, verdict.remaining, verdict.reset_seconds)
            headers = {
                "RateLimit-Limit": self._rate_limit_header[1].decode(),
                "RateLimit-Remaining": str(max(0, verdict.remaining)),
                "RateLimit-Reset": str(verdict.reset_seconds),
                "Retry-After": str(verdict.retry_after_seconds),
            }
            return error_response(ApiError(429, errors.TOO_MANY_REQUESTS, headers))
        if verdict.outcome is Outcome.QUEUE_FULL:
            raise Unavailable("the request's lane is at its maximum depth")
        if verdict.outcome is Outcome.TOKEN_SHARE_FULL:
            return _TOKEN_SHARE_FULL
        admitted.headers += (
            self._rate_limit_header,
            (b"ratelimit-remaining", b"%d" % max(0, verdict.remaining)),
            (b"ratelimit-reset", b"%d" % verdict.reset_seconds),
        )
        return admitted


def queued(validated: ValidatedBody, site: Site, received_ms: int) -> Queued:
    """The envelope to hand off, guarded by its seen key (``seen_key``).

    The bytes are what ``Envelope.to_json`` writes (the values as one array, in the
    envelope's field order; readers decode them with ``Envelope.from_json``), encoded from a
    list: building the dataclass first cost 1.5x as much on the hot path; a contract test
    keeps the two equal."""
    kind = "pageview" if validated.event_name is None else "event"
    dimensions = validated.dimensions
    envelope = orjson.dumps(
        [
            site.id,
            site.domain,
            validated.page_id or new_uuid4(),
            validated.session_id or new_uuid4(),
            validated.timestamp_ms,
            received_ms,
            validated.url,
            validated.visitor_ip,
            validated.user_agent,
            validated.referrer,
            validated.language,
            dimensions["screen_width"],
            dimensions["screen_height"],
            dimensions["viewport_width"],
            dimensions["viewport_height"],
            kind,
            validated.event_name,
            validated.event_properties,
            ENVELOPE_VERSION,
        ]
    )
    return Queued(envelope, seen_key(validated, site))


def seen_key(validated: ValidatedBody, site: Site) -> str:
    """The key that makes a retry of this item recognisable (shared.keys.SEEN), or "" when
    the client chose nothing that identifies it (generated ids cannot repeat).

    Two requests are the same item when, on the same site, both are pageviews with the same
    page_id, or both are events with the same event_id, or both are events without event_id
    with the same page_id and the same (trimmed) name. Nothing else is compared."""
    if validated.event_name is None:
        if validated.page_id is None:
            return ""
        return keys.SEEN.format(kind="pageview", site_id=site.id, item=validated.page_id)
    if validated.event_id is not None:
        return keys.SEEN.format(kind="event-id", site_id=site.id, item=validated.event_id)
    if validated.page_id is None:
        return ""
    name_hash = hashlib.sha256(validated.event_name.encode()).hexdigest()
    return keys.SEEN.format(kind="event", site_id=site.id, item=f"{validated.page_id}:{name_hash}")
