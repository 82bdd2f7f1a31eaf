"""The intake: the checks every ingest request goes through, in this order, whatever its route.
``Intake.__call__`` reads as the list:

1. Authenticate: the token (``Authorization: Bearer`` or ``X-Api-Key``) and the rate subject
   the request is charged to; a subject whose bucket is known to be empty gets 429 before its
   body is read (ingest_api.empty_buckets); no usable token 401; then the lane
   (``X-Hitstream-Lane``: 400, 403).
2. Validate: the body's size and form, its items counted (a subject known not to afford them
   gets 429 now), then each item's fields (400 naming the field).
3. Resolve each item's site from its url's host (404).
4. Check the token's grant there for the route's permission (403).
5. Rate-limit and 6. hand off: one atomic script call (ingest_api.handoff) charges the
   request's cost and queues its accepted items' envelopes (dnt items: none), all or nothing;
   429, or 503 with Retry-After for a full lane or token share.
7. Answer, with the rate headers.

What differs between routes is supplied, never coded again: the layout (how a request carries
its items: ``OneItem``, ingest_api.one_item, refused whole by its item's refusal; ``Batch``,
ingest_api.batch, up to 1000 items, each refused alone, and Idempotency-Key) and the item rules
(ingest_api.item_rules: the item's check, which names its envelope kind, and the permission).

The lane is the token's (shared.lanes): a bulk token's pageviews always go to the bulk lane;
``X-Hitstream-Lane: bulk`` is a replay's explicit ask for it, refused (403) for a live token,
which may not use the bulk lane's larger cap. A full lane, or a token's full share of it,
answers 503 with Retry-After to that lane's or token's requests only.

The rate limit comes first in effect: a request refused by a later check is still charged to
its bucket (the same script call, with nothing to queue), so once the budget is spent every
request gets 429, whatever else is wrong with it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ingest_api import errors
from ingest_api.access import Access, presented_secret
from ingest_api.answer import Answer
from ingest_api.empty_buckets import EmptyBuckets
from ingest_api.errors import ApiError, error_response, service_unavailable, too_many_requests
from ingest_api.handoff import HandOff, Outcome, Queued, StoredAnswer, Unavailable, Verdict
from ingest_api.ids import new_uuid4
from ingest_api.item_rules import ItemRules
from ingest_api.request import IngestRequest
from ingest_api.validation import KeyOrderNeeded, ValidatedBody, decode_in_order, decode_json
from shared import keys
from shared.config import Settings
from shared.control.grants import Role, can
from shared.control.sites import Site
from shared.control.tokens import ApiToken
from shared.envelope import ENVELOPE_VERSION
from shared.lanes import LANE_HEADER, Lane
from shared.proxies import caller_ip

_LANE_HEADER = LANE_HEADER.lower()
BAD_LANE = f"{LANE_HEADER} must be live or bulk"
LIVE_TOKEN_IN_BULK = f"{LANE_HEADER}: bulk needs a bulk token (hitstream tokens create --bulk)"
BULK_TOKEN_IN_LIVE = f"{LANE_HEADER}: live is not open to a bulk token"

Decode = Callable[[bytes], Any]
Rejected = list[tuple[int, ApiError]]  # (index, refusal) of each item a request's checks refused
# A layout's answer: what a request is answered once the hand-off admits it; the answer to
# store with it (Idempotency-Key); the answer to a repeat of a stored request, given the one
# found stored. A plain tuple: a NamedTuple cost 0.2-0.4 us more per request. ("Reply" is
# Redis's, in ingest_api.handoff and ingest_api.redis_wire.)
LayoutAnswer = tuple[Answer, StoredAnswer | None, Callable[[bytes], Answer] | None]


class Layout(Protocol):
    """How a route's requests carry their items (ingest_api.one_item, ingest_api.batch)."""

    max_bytes: int  # the body's limit
    too_large: str  # the 400's message past it

    def items(self, request: IngestRequest, body: bytes, decode: Decode = decode_json) -> list[Any]:
        """The body's decoded items, not yet checked; BadRequest refuses the whole request."""
        ...

    def answer(
        self, request: IngestRequest, token: ApiToken, body: bytes, total: int, rejected: Rejected, site_id: str
    ) -> LayoutAnswer:
        """The answer once admitted, given the request's ``total`` items, those ``rejected``,
        and the last accepted item's site (``site_id``, "-" for none)."""
        ...


class Intake:
    """One ingest route: its layout and item rules, through the checks every route shares."""

    def __init__(
        self,
        layout: Layout,
        rules: ItemRules,
        access: Access,
        handoff: HandOff,
        empty_buckets: EmptyBuckets,
        settings: Settings,
    ) -> None:
        self._layout = layout
        self._check = rules.check
        # The roles that hold the permission: a set lookup per item (18 ns, can() 84 ns).
        self._granting_roles = frozenset(role for role in Role if can(role, rules.permission))
        self._access = access
        self._admit = handoff.admit  # a future of the verdict (ingest_api.handoff)
        self._empty_buckets = empty_buckets
        self._burst = settings.rate_burst
        self._rate_limit_header = (b"ratelimit-limit", str(settings.rate_burst).encode())
        self._trusted_proxies = settings.trusted_proxies

    async def __call__(self, request: IngestRequest) -> Answer:
        """The answer; raises Unavailable when Redis does not answer (ingest_api.front: 503)."""
        received_ms = time.time_ns() // 1_000_000
        layout, check = self._layout, self._check
        # 1. Authenticate (the subject first: every refusal below is charged to it).
        token, subject = await self._caller(request)
        if throttled := self._empty_buckets.throttled(subject):
            return throttled
        try:
            token, lane = self._token_and_lane(request, token)
            # 2. Validate the request as a whole: the body's size and form, its items counted.
            body = await request.body(layout.max_bytes, layout.too_large)
            items = layout.items(request, body)
        except ApiError as refusal:
            return await self._refused(subject, refusal)
        if throttled := self._empty_buckets.throttled(subject, len(items)):  # no item checked yet
            return throttled
        # 2-4. Each item, the first failure deciding its refusal:
        handed_off: list[Queued] = []
        rejected: Rejected = []
        site_id = "-"  # the last accepted item's, for the log line
        in_document_order: list[Any] | None = None  # decoded again only when an item needs it
        for index, item in enumerate(items):
            try:
                # 2. Validate the item's fields.
                try:
                    validated = check(item, received_ms)
                except KeyOrderNeeded:
                    in_document_order = in_document_order or layout.items(request, body, decode_in_order)
                    validated = check(in_document_order[index], received_ms)
                # 3. Resolve its site (an AI fetch's is the one named in the request's path).
                if validated.site_id is None:
                    site, role = await self._access.site_for(token, validated.host)
                else:
                    site, role = await self._access.site_by_id(token, validated.site_id)
                if site is None:
                    raise ApiError(404, errors.SITE_NOT_FOUND)
                # 4. Check the token's grant there.
                if role not in self._granting_roles:
                    raise ApiError(403, errors.ACCESS_DENIED)
            except ApiError as refusal:
                rejected.append((index, refusal))
                continue
            if not validated.dnt:  # dnt: accepted and charged, nothing queued
                handed_off.append(queued(validated, site, received_ms))
            site_id = site.id
        answer, stored, replayed = layout.answer(request, token, body, len(items), rejected, site_id)
        # 5-6. Rate-limit and hand off: one script call charges the cost and queues the envelopes.
        verdict = await self._admit(subject, handed_off, len(items), stored, lane=lane, token_id=token.id)
        # 7. Answer.
        return self._answer(subject, verdict, answer, replayed)

    async def _caller(self, request: IngestRequest) -> tuple[ApiToken | None, str]:
        """The usable token (None: missing, unknown, revoked or expired) and the rate subject:
        a known token's own bucket, otherwise the caller's (its IP, hashed: keys hold no IPs)."""
        secret = presented_secret(request.headers)
        token = await self._access.usable_token(secret) if secret else None
        if token is not None:
            return token, f"token:{token.id}"
        caller = caller_ip(request.peer, request.headers.get("x-forwarded-for"), self._trusted_proxies)
        return None, "ip:" + hashlib.sha256(caller.encode()).hexdigest()[:32]

    def _token_and_lane(self, request: IngestRequest, token: ApiToken | None) -> tuple[ApiToken, Lane]:
        """The caller's token and its lane: ApiError 401 without a usable token, 400 for an
        unknown X-Hitstream-Lane, 403 for one that is not the token's."""
        if token is None:
            raise ApiError(401, errors.UNAUTHORIZED)
        asked = request.headers.get(_LANE_HEADER)
        lane = Lane.BULK if token.bulk else Lane.LIVE
        if asked is None or asked.strip().lower() == lane:
            return token, lane
        if asked.strip().lower() not in tuple(Lane):
            raise ApiError(400, BAD_LANE)
        raise ApiError(403, BULK_TOKEN_IN_LIVE if token.bulk else LIVE_TOKEN_IN_BULK)

    async def _refused(self, subject: str, refusal: ApiError) -> Answer:
        """A request refused whole before its items were checked; it is charged all the same,
        so a spent budget answers 429."""
        return self._answer(subject, await self._admit(subject), error_response(refusal))

    def _answer(
        self, subject: str, verdict: Verdict, answer: Answer, replayed: Callable[[bytes], Answer] | None = None
    ) -> Answer:
        """``answer`` (``replayed``'s for a repeat) with the rate headers, unless the verdict
        refused the request."""
        outcome = verdict.outcome
        if outcome is Outcome.RATE_LIMITED:
            self._empty_buckets.note(subject, verdict.remaining, verdict.reset_seconds)
            return too_many_requests(
                self._burst, max(0, verdict.remaining), verdict.reset_seconds, verdict.retry_after_seconds
            )
        if outcome is Outcome.QUEUE_FULL:
            raise Unavailable("the request's lane is at its maximum depth")
        if outcome is Outcome.TOKEN_SHARE_FULL:
            return service_unavailable(errors.TOKEN_SHARE_FULL)
        if outcome is Outcome.ANSWERED_BEFORE and replayed is not None:
            answer = replayed(verdict.stored_answer)
        answer.headers += (
            self._rate_limit_header,
            (b"ratelimit-remaining", b"%d" % max(0, verdict.remaining)),
            (b"ratelimit-reset", b"%d" % verdict.reset_seconds),
        )
        return answer


def queued(validated: ValidatedBody, site: Site, received_ms: int) -> Queued:
    """The envelope to hand off, guarded by its seen key (``seen_key``).

    The bytes are what ``Envelope.to_json`` writes (the values as one array, in the
    envelope's field order; readers decode them with ``Envelope.from_json``), encoded from a
    list: building the dataclass first cost 1.5x as much on the hot path; a contract test
    keeps the two equal."""
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
            validated.kind,
            validated.event_name,
            validated.event_properties,
            validated.fetch,
            ENVELOPE_VERSION,
        ]
    )
    return Queued(envelope, seen_key(validated, site))


def seen_key(validated: ValidatedBody, site: Site) -> str:
    """The key that makes a retry of this item recognisable (shared.keys.SEEN), or "" when
    the client chose nothing that identifies it (generated ids cannot repeat).

    Two requests are the same item when, on the same site, both are pageviews (or both items
    of another kind without a name, such as AI fetches, whose fetch_id is held as page_id) with
    the same page_id, or both are events with the same event_id, or both are events without
    event_id with the same page_id and the same (trimmed) name. Nothing else is compared."""
    if validated.event_name is None:
        if validated.page_id is None:
            return ""
        return keys.SEEN.format(kind=validated.kind, site_id=site.id, item=validated.page_id)
    if validated.event_id is not None:
        return keys.SEEN.format(kind="event-id", site_id=site.id, item=validated.event_id)
    if validated.page_id is None:
        return ""
    name_hash = hashlib.sha256(validated.event_name.encode()).hexdigest()
    return keys.SEEN.format(kind="event", site_id=site.id, item=f"{validated.page_id}:{name_hash}")
