"""The batch loop: claim -> process -> deliver (store and acknowledge, or hand off), batch
after batch, with two named overlaps.

- claim-ahead: while batch N is processed, the claimer thread claims batch N+1 (mostly
  waiting for ~650 KB from Redis);
- write-behind: while batch N is processed, the delivery thread stores and acknowledges
  batch N-1 (ClickHouse works without the GIL).

Without an overlap its stage runs inline, in the same order, so both variants are one loop
(bench/worker_bench.py measures each against none; workers.runtime.context.Overlaps has the figures
and the defaults they chose: write-behind on, claim-ahead off). Guarantees either way: a batch is
acknowledged only after its insert returned, and the next delivery starts only after the
previous one finished. While the store is unavailable the loop holds up to three batches (the
one retried, the next processed, one claimed ahead), all heart-beaten; when the store gives
up or a warm shutdown comes, they are released for immediate re-claim.

Under load (batches come full, or entries wait in either lane) one run handles consecutive
batches for up to CHAIN_SECONDS, each claimed, leased, delivered and acknowledged on its own
under its own id, then reports the backlog so its RQ job can enqueue a successor
(workers.runtime.jobs): RQ's own cost (~18 Redis round trips a job) is then paid once per many
batches. Each claim picks its lane anew (workers.batch.queue: live first), so a live entry waits
behind at most the bulk batch being processed and the one claimed ahead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from workers.batch import metrics
from workers.batch.delivery import ShutdownWhileWaiting, StoreGaveUp
from workers.batch.enrichment import Processed, process
from workers.batch.queue import Batch
from workers.runtime.context import WorkerContext

log = logging.getLogger(__name__)

# Under load, one run keeps handling full batches for this long (see the module docstring).
CHAIN_SECONDS = 2.0

T = TypeVar("T")


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
    """One run of claim -> process -> deliver over consecutive batches (see the module docstring)."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self.queue = context.batch_queue
        self.batch_size = context.settings.batch_size

    def run(self) -> LoopOutcome:
        context = self.context
        chain_until = time.monotonic() + CHAIN_SECONDS
        claimer = _Stage("hitstream-claimer", context.overlaps.claim_ahead)
        deliverer = _Stage("hitstream-deliverer", context.overlaps.write_behind)
        acknowledged = 0
        backlog = False
        with self.queue.leases_kept() as held:
            claiming: Future[Batch | None] | None = claimer.submit(self.queue.claim, self.batch_size)
            delivering: tuple[Processed, Future[None]] | None = None
            give_back = False
            try:
                while claiming is not None:
                    batch = claiming.result()
                    if batch is None:
                        break
                    held.add(batch.id)
                    metrics.batch_claimed(batch)
                    backlog = len(batch.entries) >= self.batch_size or batch.more_waiting
                    keep_going = backlog and time.monotonic() < chain_until and not context.shutdown_requested.is_set()
                    # Claim-ahead: submitted before processing, so a claimer thread overlaps it.
                    claiming = claimer.submit(self.queue.claim, self.batch_size) if keep_going else None
                    processed = process(batch, context.pipeline())
                    if delivering is not None:
                        acknowledged += self._delivered(*delivering, held)
                    # Write-behind: on the delivery thread, this batch is stored while the next is processed.
                    delivering = (processed, deliverer.submit(context.delivery.deliver, processed))
                if delivering is not None:
                    acknowledged += self._delivered(*delivering, held)
            except ShutdownWhileWaiting:
                give_back, backlog = True, False
                log.info("shutdown while waiting to deliver: batches released for re-claim")
            except StoreGaveUp:
                give_back = True
                raise
            finally:
                deliverer.close()
                claimer.close()
                if claiming is not None and claiming.exception() is None:
                    ahead = claiming.result()
                    if ahead is not None:
                        held.add(ahead.id)  # claimed ahead, never processed
                if give_back:
                    self.queue.release(*held)
        return LoopOutcome(acknowledged, backlog)

    @staticmethod
    def _delivered(processed: Processed, delivery: Future[None], held: set[str]) -> int:
        """Wait until the batch is delivered; returns its number of envelopes."""
        delivery.result()
        held.discard(processed.batch.id)
        return len(processed.batch.entries)
