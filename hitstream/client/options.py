"""How a client batches, bounds its memory and retries (one frozen value per client)."""

from __future__ import annotations

from dataclasses import dataclass

from hitstream.replay.sender import BATCH_MAX_ITEMS


@dataclass(frozen=True, slots=True)
class Options:
    # Size trigger: the sender wakes when this many items wait (it then takes up to the batch
    # endpoint's 1000 at once, so a sender that fell behind catches up in fewer requests).
    batch_items: int = 100
    # Time trigger: nothing waits longer than this (seconds) before it is posted.
    flush_interval: float = 1.0
    # Items held in memory; past it the oldest is dropped (Stats.dropped_queue_full).
    max_queue: int = 10_000
    # Requests posted at once.
    max_in_flight: int = 2
    # A request still failing this long (seconds) after its first try is dropped
    # (Stats.dropped_retry_limit): the bound on how long an outage is bridged.
    max_retry_seconds: float = 120.0
    # One HTTP attempt, connect to last byte (seconds).
    request_timeout: float = 10.0
    # How long close() (and the exit handler) keeps delivering before it drops the rest.
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_items <= BATCH_MAX_ITEMS:
            raise ValueError(f"batch_items must be from 1 to {BATCH_MAX_ITEMS} (the batch endpoint's limit)")
        for name in ("max_queue", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("flush_interval", "max_retry_seconds", "request_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
