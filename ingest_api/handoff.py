"""The hand-off: a Lua script admits requests (stored answer, rate limit, retried ids, the
lane's depth and the token's share of it, XADD, all or nothing per request), and the
requests that arrive together share one script call, one round trip to Redis.

Concurrent requests are decided together: one EVALSHA per call, written on a lean pipelined
connection (ingest_api.redis_wire, which finds Redis through shared.redis_client like every
other client, Sentinel included): one command per call instead of one per request, and no
redis-py on this path, because it cost 1.15x the server CPU per request and 0.76x the
requests/s end to end (the figures are in ingest_api.redis_wire). A call is written when it
holds ``REQUESTS_PER_CALL`` requests or ``ENVELOPES_PER_CALL`` envelopes, so Redis works on it
while this process validates the next requests (sending only at the end of the
event-loop iteration left the process idle 18% of the time while Redis ran one big call),
or at the end of the loop iteration in which its first request arrived. Each request still
awaits its own verdict, so a 202 is only sent after that request's envelopes are in Redis.
Each lane gathers its calls on a connection of its own: Redis serves its clients in turn, so a
live request's call waits for at most the bulk call Redis is running, not for every bulk call
a replay keeps in flight on a shared connection.
Every call is bounded by ``settings.redis_timeout_ms``: past it, or when Redis refuses the
connection, the caller gets ``Unavailable`` (503), never a hang.

Durability (shared.durability): in the modes that need fsync the wires refuse a Redis
without ``appendfsync always`` (ingest_api.redis_wire), so a script call's reply comes after
its fsync. In ``replicated`` mode a ``WAIT min_replicas replica_timeout_ms`` follows each
script call, written with it on the same connection (WAIT counts what acknowledged its own
connection's writes); when fewer replicas acknowledged in time, the requests it accepted are
answered 503 instead of 202: their envelopes may be queued, and a retry of the same item
(page_id, event identity, Idempotency-Key) is recognised and queued once.
Redis runs none of a connection's commands while its WAIT blocks it, so in this mode a lane's
next call is held while one of its calls waits for its WAIT (unless it fills up): the
requests arriving meanwhile share one call and one WAIT. Sending a call per loop iteration
instead queued small calls behind each WAIT: 4.3 requests per call, 0.22x relaxed's
requests/s, 1,088 answered 503 for the replica timeout; held: 30.6 requests per call, 0.76x
relaxed's, 32 answered 503, 3.8x the requests/s (median of 8 alternating rounds,
``bench.api_bench --modes ... --baseline-tree``; docs/benchmarks.md).

Idempotency (window ``settings.idempotency_window_seconds``): an envelope whose page_id the
client chose carries a seen key; while that key lives, the same id is answered but not queued
again. A request may carry an answer key (the batch endpoint's ``Idempotency-Key``): once
accepted, its answer is stored there and a repeat gets the stored answer, nothing queued (the
caller compares what the answer was stored for: ingest_api.idempotency_key).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import Histogram

from ingest_api.redis_wire import Command, RedisWire, ReplyError
from shared import keys
from shared.config import Settings
from shared.durability import Durability
from shared.lanes import LANE_KEYS, LANES, Lane
from shared.lua import NOW_MS

log = logging.getLogger(__name__)

SCRIPT = NOW_MS + (Path(__file__).parent / "handoff.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
# Large enough to spread the script call's fixed cost, small enough that Redis and this
# process work in parallel: with 64 connections, 16 and 64 gave 5-10% fewer requests/s than
# 32 (at 64 the process waited for Redis again).
REQUESTS_PER_CALL = 32
# A script runs alone in Redis: 32 batch requests of 1000 envelopes made one call of 32,000
# XADDs that held Redis past the 250 ms timeout, and every other call (live ones included)
# waited behind it and got 503. A call stops growing at this many envelopes.
ENVELOPES_PER_CALL = 1000


class Unavailable(Exception):
    """Redis did not answer within the timeout (or refused): nothing can be promised."""


class Outcome(enum.IntEnum):
    ACCEPTED = 0
    RATE_LIMITED = 1
    QUEUE_FULL = 2  # the request's lane is at its maximum depth
    ANSWERED_BEFORE = 3  # the answer key exists: Verdict.stored_answer is the answer
    TOKEN_SHARE_FULL = 4  # the token's entries fill its share of the lane


_OUTCOMES = tuple(Outcome)  # by value, without the enum's slow call
# The outcomes answered 202: what replicated mode must see on the replicas first.
_PROMISING = frozenset({Outcome.ACCEPTED, Outcome.ANSWERED_BEFORE})


class Verdict(NamedTuple):
    outcome: Outcome
    remaining: int  # whole items left in the subject's bucket (negative: in debt)
    reset_seconds: int  # until the bucket is full again
    retry_after_seconds: int  # when RATE_LIMITED: until the bucket holds enough; else 0
    stored_answer: bytes = b""  # when ANSWERED_BEFORE


class Queued(NamedTuple):
    """One envelope to append, and the key that marks its page_id as seen."""

    envelope: bytes
    seen_key: str = ""  # empty when the API generated the page_id: a fresh UUID needs no guard


class StoredAnswer(NamedTuple):
    """The answer to keep under ``key`` for the window once the request is accepted."""

    key: str
    body: bytes


_NO_ANSWER = StoredAnswer("", b"")
_LANE_INDEX = {lane: index for index, lane in enumerate(LANES, start=1)}  # the lane's KEYS index
_LANE_KEYS = [LANE_KEYS[lane].stream for lane in LANES] + [LANE_KEYS[lane].queued_by_token for lane in LANES]


@dataclass(slots=True)
class _Request:
    bucket: str
    cost: int
    queued: Sequence[Queued]
    answer: StoredAnswer | None
    lane: Lane
    token_id: str
    verdict: asyncio.Future[Verdict]


class HandOff:
    """Admits requests for rate-limit subjects, concurrent ones in one script call."""

    def __init__(self, wires: Mapping[Lane, RedisWire], settings: Settings, latency: Histogram) -> None:
        self._wires = dict(wires)  # one connection per lane (see the module docstring)
        self._latency = latency  # seconds per script call, observed when it answers or fails
        self._limits = (
            settings.rate_limit,
            settings.rate_burst,
            settings.queue_max_depth,
            settings.bulk_queue_max_depth,
            settings.token_queue_share,
            keys.ENVELOPE_FIELD,
            keys.TOKEN_FIELD,
            settings.idempotency_window_seconds,
        )
        replicated = settings.durability is Durability.REPLICATED
        # What follows each script call on its connection: WAIT in replicated mode (replicas
        # to acknowledge, and how long to wait for them), else nothing.
        self._needed = settings.min_replicas if replicated else 0
        self._then: tuple[Command, ...] = (
            (("WAIT", settings.min_replicas, settings.replica_timeout_ms),) if replicated else ()
        )
        self._waiting: dict[Lane, list[_Request]] = {lane: [] for lane in LANES}
        self._envelopes: dict[Lane, int] = dict.fromkeys(LANES, 0)  # in each lane's next call
        # Replicated mode: each lane's calls whose WAIT has not answered yet (see ``admit``).
        self._in_flight: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self._sending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def stop(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)
        for wire in self._wires.values():
            wire.close()

    def admit(
        self,
        subject: str,
        queued: Sequence[Queued] = (),
        cost: int = 1,
        answer: StoredAnswer | None = None,
        lane: Lane = Lane.LIVE,
        token_id: str = "",
    ) -> asyncio.Future[Verdict]:
        """Charge ``cost`` items to the subject's bucket and, if allowed and the lane has room
        (for the token's share too), append the envelopes whose ids were not seen to the lane,
        counted for ``token_id``, and store the answer; all or nothing.
        The verdict comes in the returned future (a plain function, not a coroutine: one frame
        less to create and resume per request); it fails with Unavailable (within the Redis
        timeout) when Redis does not answer."""
        loop = self._loop
        if loop is None or not loop.is_running():
            # asyncio.get_running_loop() makes a getpid() system call on every call (CPython's
            # check for a fork): ~4% of a request's CPU here. The loop only changes between
            # tests, which run each app on a loop of its own.
            loop = self._loop = asyncio.get_running_loop()
        verdict = loop.create_future()
        waiting = self._waiting[lane]
        if not waiting and not self._in_flight[lane]:
            # The first of a call: sent after this loop iteration at the latest. Behind a WAIT
            # it is sent once the lane's calls have settled instead (or once full): Redis runs
            # none of a connection's commands while a WAIT blocks it, so the call grows
            # meanwhile and the next WAIT covers all of it, rather than one small call each.
            loop.call_soon(self._flush, lane)
        waiting.append(
            _Request(keys.RATE_BUCKET.format(subject=subject), cost, queued, answer, lane, token_id, verdict)
        )
        envelopes = self._envelopes[lane] = self._envelopes[lane] + len(queued)
        if len(waiting) == REQUESTS_PER_CALL or envelopes >= ENVELOPES_PER_CALL:
            self._flush(lane)
        return verdict

    def _flush(self, lane: Lane) -> None:
        """Write the lane's waiting requests' script call to Redis now; a task settles their
        verdicts."""
        requests = self._waiting[lane]
        if not requests:  # sent already: the call filled up, or the lane's last call settled
            return
        self._waiting[lane] = []
        self._envelopes[lane] = 0
        arguments = self._call(requests)
        wire = self._wires[lane]
        call = wire.execute(("EVALSHA", SCRIPT_SHA, *arguments), *self._then)
        task = asyncio.ensure_future(
            self._settle(requests, arguments, wire, call, time.perf_counter()), loop=self._loop
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        if self._then:
            self._in_flight[lane] += 1
            task.add_done_callback(lambda _: self._settled(lane))

    def _settled(self, lane: Lane) -> None:
        """One of the lane's calls and its WAIT settled: with none left in flight, send the
        call held behind them (see ``admit``)."""
        self._in_flight[lane] -= 1
        if not self._in_flight[lane]:
            self._flush(lane)

    async def _settle(
        self,
        requests: list[_Request],
        arguments: list[str | bytes | float | int],
        wire: RedisWire,
        call: Awaitable[list[Any]],
        sent: float,
    ) -> None:
        """Await the requests' script call and its WAIT (bounded by the wire's timeout); settle
        every verdict."""
        try:
            reply, *acknowledged = await call
            if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
                # After a Redis restart or SCRIPT FLUSH EVALSHA ran nothing; EVAL runs and caches it.
                reply, *acknowledged = await wire.execute(("EVAL", SCRIPT, *arguments), *self._then)
        except (ConnectionError, OSError, TimeoutError) as error:
            reply = error
        self._latency.observe(time.perf_counter() - sent)  # timeouts too: they are what it is for
        if isinstance(reply, BaseException):  # ReplyError too: the script refused, nothing written
            log.warning("hand-off to Redis failed: %s", type(reply).__name__)
            for request in requests:
                if not request.verdict.done():
                    request.verdict.set_exception(Unavailable(type(reply).__name__))
            return
        # Every outcome answered 202 wrote its rate bucket in this call, so WAIT covers the
        # call's writes and all before them (a retried id's first write too, whichever
        # connection made it).
        unreplicated = self._needed > 0 and not (isinstance(acknowledged[0], int) and acknowledged[0] >= self._needed)
        if unreplicated:
            log.warning("hand-off acknowledged by %s replicas, %d needed: answering 503", acknowledged[0], self._needed)
        for index, request in enumerate(requests):
            if not request.verdict.done():
                outcome, remaining, reset, retry_after, stored = reply[index * 5 : index * 5 + 5]
                if unreplicated and outcome in _PROMISING:
                    request.verdict.set_exception(Unavailable("replicas did not acknowledge in time"))
                else:
                    request.verdict.set_result(Verdict(_OUTCOMES[outcome], remaining, reset, retry_after, stored))

    def _call(self, requests: list[_Request]) -> list[str | bytes | float | int]:
        """EVALSHA arguments after the SHA: key count, keys, then ARGV (see handoff.lua)."""
        first_bucket = len(_LANE_KEYS) + 1
        buckets: dict[str, int] = {}  # bucket key -> its index in KEYS (after the lanes' keys)
        for request in requests:
            buckets.setdefault(request.bucket, len(buckets) + first_bucket)
        arguments: list[str | bytes | float | int] = [
            len(_LANE_KEYS) + len(buckets),
            *_LANE_KEYS,
            *buckets,
            *self._limits,
        ]
        for request in requests:
            answer = request.answer or _NO_ANSWER
            arguments += (
                buckets[request.bucket],
                request.cost,
                len(request.queued),
                answer.key,
                answer.body,
                _LANE_INDEX[request.lane],
                request.token_id,
            )
            for queued in request.queued:
                arguments += (queued.seen_key, queued.envelope)
        return arguments
