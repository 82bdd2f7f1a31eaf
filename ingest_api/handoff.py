"""The hand-off: a Lua script admits requests (stored answer, rate limit, retried ids, queue
depth, XADD, all or nothing per request), and a batcher sends the requests that arrive
together to Redis in one round trip.

Concurrent requests are collected by one background task and decided by one EVALSHA per
``MAX_REQUESTS_PER_CALL`` requests, all in one pipeline: one command per batch instead of one
per request, because a pipelined command costs the client ~40 µs of CPU, more than the rest
of the request. Each request still awaits its own verdict, so a 202 is only sent after that
request's envelopes are in Redis. Every wait is bounded by ``settings.redis_timeout_ms``: past
it, or when Redis refuses the connection, the caller gets ``Unavailable`` (503), never a hang.

Idempotency (window ``settings.idempotency_window_seconds``): an envelope whose page_id the
client chose carries a seen key; while that key lives, the same id is answered but not queued
again. A request may carry an answer key (the batch endpoint's ``Idempotency-Key``): once
accepted, its answer is stored there and a repeat gets the stored answer, nothing queued.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from shared import keys
from shared.config import Settings

log = logging.getLogger(__name__)

SCRIPT = (Path(__file__).parent / "handoff.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
# Bounds how long one script call holds Redis (a few microseconds per request).
MAX_REQUESTS_PER_CALL = 256


class Unavailable(Exception):
    """Redis did not answer within the timeout (or refused): nothing can be promised."""


class Outcome(enum.IntEnum):
    ACCEPTED = 0
    RATE_LIMITED = 1
    QUEUE_FULL = 2
    ANSWERED_BEFORE = 3  # the answer key exists: Verdict.stored_answer is the answer


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    remaining: int  # whole items left in the subject's bucket
    reset_seconds: int  # until the bucket is full again
    retry_after_seconds: int  # when RATE_LIMITED: until the bucket holds enough; else 0
    stored_answer: bytes = b""  # when ANSWERED_BEFORE


@dataclass(frozen=True, slots=True)
class Queued:
    """One envelope to append, and the key that marks its page_id as seen."""

    envelope: bytes
    seen_key: str = (
        ""  # empty when the API generated the page_id: a fresh UUID needs no guard
    )


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The answer to keep under ``key`` for the window once the request is accepted."""

    key: str
    body: bytes


@dataclass(slots=True)
class _Request:
    bucket: str
    cost: int
    queued: Sequence[Queued]
    answer: StoredAnswer | None
    verdict: asyncio.Future[Verdict]


def _give_up(verdict: asyncio.Future[Verdict]) -> None:
    if not verdict.done():
        verdict.set_exception(Unavailable("Redis did not answer in time"))


class HandOff:
    """Admits requests for rate-limit subjects; one background task batches the Redis calls."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._timeout = settings.redis_timeout_ms / 1000
        self._limits = (
            settings.rate_limit,
            settings.rate_burst,
            settings.queue_max_depth,
            keys.ENVELOPE_FIELD,
            settings.idempotency_window_seconds,
        )
        self._waiting: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hitstream-handoff")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def admit(
        self,
        subject: str,
        queued: Sequence[Queued] = (),
        cost: int = 1,
        answer: StoredAnswer | None = None,
    ) -> Verdict:
        """Charge ``cost`` items to the subject's bucket and, if allowed and the queue has room,
        append the envelopes whose ids were not seen and store the answer; all or nothing.
        Raises Unavailable."""
        loop = asyncio.get_running_loop()
        bucket = keys.RATE_BUCKET.format(subject=subject)
        request = _Request(bucket, cost, queued, answer, loop.create_future())
        self._waiting.append(request)
        self._wakeup.set()
        # A timer per request (cheaper than asyncio.timeout on this hot path) bounds the wait.
        expiry = loop.call_later(self._timeout, _give_up, request.verdict)
        try:
            return await request.verdict
        finally:
            expiry.cancel()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Requests that already gave up (timed out, answered 503) are not sent.
            requests = [
                request for request in self._waiting if not request.verdict.done()
            ]
            self._waiting = []
            if requests:
                await self._send(requests)

    async def _send(self, requests: list[_Request]) -> None:
        batches = [
            requests[at : at + MAX_REQUESTS_PER_CALL]
            for at in range(0, len(requests), MAX_REQUESTS_PER_CALL)
        ]
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._execute([self._call(batch) for batch in batches])
        except (RedisError, OSError, TimeoutError) as error:
            replies = [error] * len(batches)
        for batch, reply in zip(batches, replies, strict=True):
            if isinstance(reply, BaseException):
                log.warning("hand-off to Redis failed: %s", type(reply).__name__)
                for request in batch:
                    if not request.verdict.done():
                        request.verdict.set_exception(Unavailable(type(reply).__name__))
                continue
            for index, request in enumerate(batch):
                if not request.verdict.done():
                    outcome, remaining, reset, retry_after, stored = reply[
                        index * 5 : index * 5 + 5
                    ]
                    verdict = Verdict(
                        Outcome(outcome), remaining, reset, retry_after, stored
                    )
                    request.verdict.set_result(verdict)

    def _call(self, batch: list[_Request]) -> list[str | bytes | float | int]:
        """EVALSHA arguments after the SHA: key count, keys, then ARGV (see handoff.lua)."""
        return [
            1 + len(batch),
            keys.STREAM,
            *(request.bucket for request in batch),
            *self._limits,
            *(argument for request in batch for argument in _arguments(request)),
        ]

    async def _execute(
        self, calls: list[list[str | bytes | float | int]]
    ) -> list[object]:
        replies = await self._pipeline(calls)
        missing = [
            index
            for index, reply in enumerate(replies)
            if isinstance(reply, NoScriptError)
        ]
        if (
            missing
        ):  # first call after a Redis restart or SCRIPT FLUSH: EVALSHA ran nothing
            await self._redis.script_load(SCRIPT)
            retried = await self._pipeline([calls[index] for index in missing])
            for index, reply in zip(missing, retried, strict=True):
                replies[index] = reply
        return replies

    async def _pipeline(
        self, calls: list[list[str | bytes | float | int]]
    ) -> list[object]:
        pipe = self._redis.pipeline(transaction=False)
        for arguments in calls:
            pipe.evalsha(SCRIPT_SHA, *arguments)
        return await pipe.execute(raise_on_error=False)


def _arguments(request: _Request) -> list[str | bytes | int]:
    answer = request.answer or StoredAnswer("", b"")
    arguments: list[str | bytes | int] = [
        request.cost,
        len(request.queued),
        answer.key,
        answer.body,
    ]
    for queued in request.queued:
        arguments += (queued.seen_key, queued.envelope)
    return arguments
