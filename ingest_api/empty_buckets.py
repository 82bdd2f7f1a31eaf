"""A process's short note of the rate buckets known to be empty, so that their next requests
are refused with 429 before the body is read.

Redis decides every rate limit (ingest_api/handoff.lua); when it refuses a request it also says
how many whole items the bucket holds, negative while the bucket is in debt (a batch larger
than the burst leaves it so). Below one item, any request is refused until the bucket has
refilled to one item, and nothing can refill it faster than the rate (other API processes only
take from it): so until then this process answers 429 itself, without reading, parsing or
validating the body, and without a Redis call. The note errs early, never late: it ends at
the earliest moment the bucket could hold one item, less the Redis timeout (the oldest a
verdict can be when it arrives).

Memory is bounded: at most ``MAX_NOTES`` subjects, the oldest note dropped first.
"""

from __future__ import annotations

import math
import time

from ingest_api import errors
from ingest_api.answer import Answer
from ingest_api.errors import ApiError, error_response

MAX_NOTES = 10_000  # ~1.5 MB: a note is a subject string and two floats


class EmptyBuckets:
    def __init__(self, rate: float, burst: int, verdict_age_seconds: float) -> None:
        self._rate = rate
        self._limit = str(burst)
        self._verdict_age = verdict_age_seconds
        self._notes: dict[str, tuple[float, float]] = {}  # subject -> (empty until, full at), monotonic

    def note(self, subject: str, whole_items: int, reset_seconds: int) -> None:
        """Note a 429 verdict: the bucket held ``whole_items`` (floored; negative in debt)."""
        self._notes.pop(subject, None)
        # Fewer than whole_items + 1 items: one item is at least -whole_items / rate away.
        empty_for = -whole_items / self._rate - self._verdict_age
        if empty_for <= 0:
            return
        if len(self._notes) >= MAX_NOTES:
            del self._notes[next(iter(self._notes))]
        now = time.monotonic()
        self._notes[subject] = (now + empty_for, now + reset_seconds)

    def refusal(self, subject: str) -> Answer | None:
        """The 429 for a subject whose bucket is still known to be empty; else None."""
        note = self._notes.get(subject)
        if note is None:
            return None
        empty_until, full_at = note
        now = time.monotonic()
        if now >= empty_until:
            del self._notes[subject]
            return None
        headers = {
            "RateLimit-Limit": self._limit,
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(math.ceil(full_at - now)),
            "Retry-After": str(math.ceil(empty_until - now)),
        }
        return error_response(ApiError(429, errors.TOO_MANY_REQUESTS, headers))
