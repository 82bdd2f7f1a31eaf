"""A process's short note of what each rate bucket can hold at most, so that requests the
bucket is known not to afford are refused with 429 before their body is read (or, for a
batch, before its items are checked).

Redis decides every rate limit (ingest_api/handoff.lua); when it refuses a request it also says
how many whole items the bucket holds, negative while the bucket is in debt (a batch larger
than the burst leaves it so). Nothing refills a bucket faster than the rate (other API
processes only take from it), so from then on the bucket holds less than
``whole items + 1 + rate * elapsed``. While that ceiling is at most one item, every request
of the subject is refused: the endpoints answer 429 before reading the body, without a Redis
call. Once a batch's items are counted (cost known, nothing validated yet), it is refused the
same way while the ceiling is at most what it needs. The note errs early, never late: the
elapsed time counts from a Redis timeout before the verdict arrived (the oldest it can be).

Memory is bounded: at most ``MAX_NOTES`` subjects, the oldest note dropped first; a note is
dropped once its ceiling passes the burst (it can refuse nothing then).
"""

from __future__ import annotations

import math
import time

from ingest_api.answer import Answer
from ingest_api.errors import too_many_requests

MAX_NOTES = 10_000  # ~1.5 MB: a note is a subject string and three floats


class EmptyBuckets:
    def __init__(self, rate: float, burst: int, verdict_age_seconds: float) -> None:
        self._rate = rate
        self._burst = burst
        self._verdict_age = verdict_age_seconds
        # subject -> (items it held at most, at that monotonic time, full at), from a 429
        self._notes: dict[str, tuple[float, float, float]] = {}

    def note(self, subject: str, whole_items: int, reset_seconds: int) -> None:
        """Note a 429 verdict: the bucket held ``whole_items`` (floored; negative in debt)."""
        self._notes.pop(subject, None)
        if len(self._notes) >= MAX_NOTES:
            del self._notes[next(iter(self._notes))]
        now = time.monotonic()
        self._notes[subject] = (whole_items + 1, now - self._verdict_age, now + reset_seconds)

    def throttled(self, subject: str, cost: int = 1) -> Answer | None:
        """The 429 for a request of ``cost`` items the subject's bucket is known not to hold
        (Redis asks for ``min(cost, burst)``); else None."""
        note = self._notes.get(subject)
        if note is None:
            return None
        held_at_most, since, full_at = note
        now = time.monotonic()
        ceiling = held_at_most + (now - since) * self._rate
        needed = min(cost, self._burst)
        if ceiling > needed:
            if ceiling > self._burst:
                del self._notes[subject]
            return None
        return too_many_requests(
            self._burst,
            max(0, math.ceil(ceiling) - 1),  # at most this many
            max(1, math.ceil(full_at - now)),
            max(1, math.ceil((needed - ceiling) / self._rate)),
        )
