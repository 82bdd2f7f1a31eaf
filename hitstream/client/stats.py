"""What became of the items a client was given, by outcome (plain counters, read any time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    queued: int = 0  # given to send_pageview / send_event
    delivered: int = 0  # answered accepted by the API (a retried id counts once per answer)
    rejected: int = 0  # refused by the API for good (4xx other than 429: the log says why)
    retries: int = 0  # requests sent again after a 429, a 5xx or a network error
    dropped_queue_full: int = 0  # the oldest queued item, pushed out by a new one
    dropped_retry_limit: int = 0  # still failing after Options.max_retry_seconds
    dropped_at_close: int = 0  # undelivered when close() ran out of time, or sent after it

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_retry_limit + self.dropped_at_close
