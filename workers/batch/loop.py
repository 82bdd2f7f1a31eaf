"""The batch loop: claim -> enrich -> deliver (store and acknowledge, or pass to the store
writer), batch after batch, with two named overlaps.

- claim-ahead: while batch N is enriched, the claimer thread claims batch N+1 (mostly
  waiting for ~650 KB from Redis);
- write-behind: while batch N is enriched, the delivery thread stores and acknowledges
  batch N-1 (ClickHouse works without the GIL).

Without an overlap its stage runs inline, in the same order, so both variants are one loop
(bench/worker_bench.py measures each against none; ``Overlaps`` has the figures and the
defaults they chose: write-behind on, claim-ahead off). Guarantees either way: a batch is
acknowledged only after its insert returned, and the next delivery starts only after the
previous one finished. While the store is unavailable the loop holds up to three batches (the
one retried, the next enriched, one claimed ahead), all heart-beaten; when the store gives
up, a warm shutdown comes or anything else fails, they are released for immediate re-claim.

Under load (batches come full, or entries wait in either lane) one run handles consecutive
batches for up to CHAIN_SECONDS, each claimed, leased, delivered and acknowledged on its own
under its own id, then reports the backlog so its RQ job can enqueue a successor
(workers.runtime.jobs): RQ's own cost (~18 Redis round trips a job) is then paid once per many
batches. Each claim picks its lane anew (workers.batch.queue: live first), so a live entry waits
behind at most the bulk batch being enriched and the one claimed ahead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import redis

from workers.batch import metrics
from workers.batch.delivery import Delivery, ShutdownWhileWaiting
from workers.batch.enrichment import EnrichedBatch, enrich
from workers.batch.queue import Batch, BatchQueue
from workers.pipeline import Pipeline

log = logging.getLogger(__name__)

# Under load, one run keeps handling full batches for this long (see the module docstring).
CHAIN_SECONDS = 2.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Overlaps:
    """Which stages of the batch loop run on their own thread beside enriching.

    bench/worker_bench.py, one worker process, events/s against no overlap, five runs on the
    shared 2-core machine (2026-11-28; the first with cold caches, the last two with the
    machine nearly idle): write-behind 1.47x, 0.95x, 1.13x, 1.03x, 1.11x (median 1.11x);
    claim-ahead 1.27x, 1.01x, 1.08x, 1.10x, 1.06x (1.08x); both 1.16x, 0.93x, 1.07x, 1.04x,
    1.00x (1.04x). Both together never beat the better one alone: a claim's reply is parsed
    into ~1,000 entries holding the GIL, which the enriching thread then waits for (inside
    the worker, the claim went from 6-9 to 27 µs per event, the Arrow build from 2 to 12-17).
    So write-behind is on (the insert runs in ClickHouse without the GIL) and claim-ahead is
    off; both stay switches for the benchmark's A/B.
    """

    claim_ahead: bool = False
    write_behind: bool = True


@dataclass(frozen=True, slots=True)
class LoopOutcome:
    acknowledged: int  # envelopes delivered
    backlog: bool  # the last batch was full or left entries waiting: a successor is due


class _Stage:
    """A stage on its own thread (an overlap), or inline when that overlap is off."""

    def __init__(self, name: str, threaded: bool) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) if threaded else None

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        if self.executor is not None:
            return self.executor.submit(fn, *args)
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001  (delivered through the future, as a thread would)
            future.set_exception(error)
        return future

    def close(self) -> None:
        """Wait for what this stage was given (never leave it working behind a finished run)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class BatchLoop:
    """One run of claim -> enrich -> deliver over consecutive batches (see the module docstring).

    ``pipeline`` gives the pipeline for the next batch (its exclusion rules kept fresh);
    ``shutdown``, set by a warm shutdown, ends the run after the batch at hand."""

    def __init__(
        self,
        queue: BatchQueue,
        batch_size: int,
        pipeline: Callable[[], Pipeline],
        delivery: Delivery,
        overlaps: Overlaps,
        shutdown: threading.Event,
    ) -> None:
        self.queue = queue
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.delivery = delivery
        self.overlaps = overlaps
        self.shutdown = shutdown

    def run(self) -> LoopOutcome:
        chain_until = time.monotonic() + CHAIN_SECONDS
        claimer = _Stage("hitstream-claimer", self.overlaps.claim_ahead)
        deliverer = _Stage("hitstream-deliverer", self.overlaps.write_behind)
        acknowledged = 0
        backlog = False
        with self.queue.leases_kept() as held:
            claiming: Future[Batch | None] | None = claimer.submit(self.queue.claim, self.batch_size)
            delivering: tuple[EnrichedBatch, Future[None]] | None = None
            give_back = False
            try:
                while claiming is not None:
                    batch = claiming.result()
                    if batch is None:
                        break
                    held.add(batch.id)
                    metrics.batch_claimed(batch)
                    backlog = len(batch.entries) >= self.batch_size or batch.more_waiting
                    keep_going = backlog and time.monotonic() < chain_until and not self.shutdown.is_set()
                    # Claim-ahead: submitted before enriching, so a claimer thread overlaps it.
                    claiming = claimer.submit(self.queue.claim, self.batch_size) if keep_going else None
                    enriched = enrich(batch, self.pipeline())
                    if delivering is not None:
                        acknowledged += self._delivered(*delivering, held)
                    # Write-behind: on the delivery thread, this batch is stored while the next is enriched.
                    delivering = (enriched, deliverer.submit(self.delivery.deliver, enriched))
                if delivering is not None:
                    acknowledged += self._delivered(*delivering, held)
            except ShutdownWhileWaiting:
                give_back, backlog = True, False
                log.info("shutdown while waiting to deliver: batches released for re-claim")
            except Exception:
                # The store gave up, or anything else failed (Redis answering an error, say
                # READONLY from a demoted primary): the batches are re-claimed at once under
                # their ids (a repeated insert is deduplicated), not after claim_timeout.
                give_back = True
                raise
            finally:
                deliverer.close()
                claimer.close()
                if claiming is not None and claiming.exception() is None:
                    ahead = claiming.result()
                    if ahead is not None:
                        held.add(ahead.id)  # claimed ahead, never enriched
                if give_back:
                    self._release(held)
        return LoopOutcome(acknowledged, backlog)

    def _release(self, held: set[str]) -> None:
        try:
            self.queue.release(*held)
        except redis.RedisError as error:  # the failure that ends the run stays the one raised
            log.warning("could not release batches %s (%s): re-claimed once their leases expire", held, error)

    @staticmethod
    def _delivered(enriched: EnrichedBatch, delivery: Future[None], held: set[str]) -> int:
        """Wait until the batch is delivered; returns its number of envelopes."""
        delivery.result()
        held.discard(enriched.batch.id)
        return len(enriched.batch.entries)
