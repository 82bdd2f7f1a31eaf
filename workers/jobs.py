"""RQ job functions: ``process_batch``, the unit of batch work.

A job claims a batch (up to HITSTREAM_BATCH_SIZE envelopes), runs each envelope through the
pipeline, writes rows and drop counts in one insert per table and month keyed by the batch
id, and only then acknowledges the batch (together with its dead letters, in one
transaction). Rows the store refuses (workers.store.store) become dead letters with the
store's error; the rest of the batch is stored and acknowledged, so a refused row never holds
back the batches behind it. A crash at any point before the ack leaves the batch claimed; its
lease expires and the next job re-claims it under the same id, so ClickHouse deduplicates the
repeated inserts (and refuses the same rows again).

Under load (batches come full, or more entries wait in either lane) one job handles
consecutive batches for up to CHAIN_SECONDS, each claimed, leased, stored and acknowledged on
its own under its own id; RQ's own cost (~18 Redis round trips a job) is then paid once per
many batches. Each claim picks its lane anew (workers.queue: live first), so a live entry
waits behind at most the bulk batch being processed and the one claimed ahead. The job's
thread only processes: while it processes batch N, the claimer thread claims batch N+1
(mostly waiting for ~650 KB from Redis) and the store-writer thread inserts, then
acknowledges, batch N-1 (ClickHouse works without the GIL). A batch is acknowledged only after its insert returned,
and the next insert starts only after that acknowledgement. While the store is unavailable
a job therefore holds up to three batches (the one retried, the next processed, one claimed
ahead), all heart-beaten; every other envelope waits unclaimed in Redis, and when the job
gives up or a warm shutdown comes, its batches are released for immediate re-claim.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rq import Queue

from shared.envelope import Envelope
from shared.keys import BATCH_QUEUE
from workers import dead_letters, metrics, runtime
from workers.dead_letters import DeadLetter
from workers.queue import Batch, BatchQueue
from workers.records import Drop, PageviewRow

if TYPE_CHECKING:
    from workers.store.store import Refusals

log = logging.getLogger(__name__)

# How long a job keeps retrying an unavailable store before it gives its batches back.
STORE_RETRY_SECONDS = 180.0
STORE_RETRY_FIRST_DELAY = 0.1
STORE_RETRY_MAX_DELAY = 10.0
# Under load, one job keeps handling full batches for this long (see the module docstring).
CHAIN_SECONDS = 2.0
JOB_TIMEOUT_SECONDS = int(CHAIN_SECONDS + STORE_RETRY_SECONDS) + 120


class StoreGaveUp(RuntimeError):
    """The store stayed unavailable past STORE_RETRY_SECONDS; the job's batches were released."""


class ShutdownWhileWaiting(Exception):
    """A warm shutdown interrupted a wait for the store; the job's batches were released."""


def enqueue_batch_jobs(rq_queue: Queue, count: int) -> None:
    """Put ``count`` process_batch jobs on ``rq_queue`` in one round trip."""
    job_data = Queue.prepare_data(
        process_batch,
        timeout=JOB_TIMEOUT_SECONDS,
        result_ttl=0,
        description="hitstream process_batch",
    )
    rq_queue.enqueue_many([job_data] * count)


# Where a row or drop came from: its stream entry id and envelope (to dead-letter it).
_Source = tuple[str, Envelope]


@dataclass(frozen=True, slots=True)
class _Processed:
    batch: Batch
    rows: list[PageviewRow]
    drops: list[Drop]
    letters: list[DeadLetter]
    row_sources: list[_Source]  # parallel to rows
    drop_sources: list[_Source]  # parallel to drops


def _process(batch: Batch) -> _Processed:
    from workers.pipeline import StepFailed

    metrics.batch_claimed(batch)
    pipeline = runtime.pipeline()
    rows: list[PageviewRow] = []
    drops: list[Drop] = []
    letters: list[DeadLetter] = []
    row_sources: list[_Source] = []
    drop_sources: list[_Source] = []
    for entry in batch.entries:
        try:
            envelope = Envelope.from_json(entry.data)
        except (ValueError, TypeError) as error:
            letters.append(dead_letters.for_undecodable(entry.id, batch.id, entry.data, str(error)))
            continue
        try:
            outcome = pipeline.process(envelope)
        except StepFailed as error:
            letters.append(dead_letters.for_failed_step(entry.id, batch.id, envelope, error.step, str(error.cause)))
            continue
        if isinstance(outcome, Drop):
            drops.append(outcome)
            drop_sources.append((entry.id, envelope))
        else:
            rows.append(outcome)
            row_sources.append((entry.id, envelope))
    return _Processed(batch, rows, drops, letters, row_sources, drop_sources)


def _write(processed: _Processed) -> Refusals:
    """Write with exponential backoff while the store is unavailable (on the store-writer
    thread); returns what the store refused. Raises StoreGaveUp after STORE_RETRY_SECONDS,
    ShutdownWhileWaiting when a warm shutdown interrupts the wait."""
    from workers.store.store import StoreUnavailable

    batch_id = processed.batch.id
    deadline = time.monotonic() + STORE_RETRY_SECONDS
    delay = STORE_RETRY_FIRST_DELAY
    while True:
        try:
            with metrics.timed_insert():
                return runtime.current_store().write_batch(batch_id, processed.rows, processed.drops)
        except StoreUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise StoreGaveUp(f"store unavailable for {STORE_RETRY_SECONDS:.0f} s: {error}") from error
            metrics.store_retried()
            log.warning("batch %s: store unavailable, retrying in %.1f s: %s", batch_id, delay, error)
        if runtime.shutdown_requested.wait(delay):
            raise ShutdownWhileWaiting(batch_id)
        delay = min(delay * 2, STORE_RETRY_MAX_DELAY)


def _refused_letters(processed: _Processed, refusals: Refusals) -> list[DeadLetter]:
    """Dead letters (step "store") for the envelopes whose rows or drop counts were refused."""
    batch_id = processed.batch.id
    refused = [(processed.row_sources[position], error) for position, error in refusals.rows.items()]
    refused += [(processed.drop_sources[position], error) for position, error in refusals.drops.items()]
    return [
        dead_letters.for_failed_step(entry_id, batch_id, envelope, "store", error)
        for (entry_id, envelope), error in refused
    ]


def _acknowledge(queue: BatchQueue, batch: Batch, letters: list[DeadLetter]) -> None:
    with runtime.redis_client().pipeline(transaction=True) as pipe:
        dead_letters.record(pipe, letters)
        queue.ack(batch, pipe)
        pipe.execute()
    if letters:
        log.warning("batch %s: %d envelope(s) sent to dead letters", batch.id, len(letters))


def _store(queue: BatchQueue, processed: _Processed) -> None:
    refusals = _write(processed)
    letters = processed.letters + _refused_letters(processed, refusals)
    _acknowledge(queue, processed.batch, letters)
    metrics.batch_stored(processed.batch, len(processed.rows) - len(refusals.rows), processed.drops, letters)


class _Write:
    """One batch's insert, then its acknowledgement, running on the store-writer thread."""

    def __init__(self, queue: BatchQueue, processed: _Processed) -> None:
        self.processed = processed
        self.future: Future[None] = runtime.store_writer().submit(_store, queue, processed)

    def finish(self, held: set[str]) -> int:
        """Wait until the batch is stored and acknowledged; returns its number of envelopes."""
        self.future.result()
        held.discard(self.processed.batch.id)
        return len(self.processed.batch.entries)


def _settle(claiming: Future[Batch | None] | None, writing: _Write | None, held: set[str]) -> None:
    """Let the claimer and writer threads finish what this job gave them (never leave them
    working behind a finished job); a batch claimed ahead joins ``held``."""
    if writing is not None:
        wait([writing.future])
    if claiming is not None and claiming.exception() is None and (batch := claiming.result()) is not None:
        held.add(batch.id)


def process_batch() -> int:
    """Claim, process, store and acknowledge batches (see the module docstring); returns the
    number of envelopes acknowledged."""
    batch_size = runtime.settings().batch_size
    queue = runtime.batch_queue()
    chain_until = time.monotonic() + CHAIN_SECONDS
    acknowledged = 0
    runtime.pipeline()  # built by a process's first job (imports, GeoIP readers) before any lease ticks
    claiming: Future[Batch | None] | None = runtime.batch_claimer().submit(queue.claim, batch_size)
    writing: _Write | None = None
    give_back = False
    with queue.leases_kept() as held:
        try:
            while claiming is not None and (batch := claiming.result()) is not None:
                held.add(batch.id)
                claiming = None
                backlog = len(batch.entries) >= batch_size or batch.more_waiting
                if backlog and time.monotonic() < chain_until and not runtime.shutdown_requested.is_set():
                    claiming = runtime.batch_claimer().submit(queue.claim, batch_size)
                processed = _process(batch)
                if writing is not None:
                    acknowledged += writing.finish(held)
                writing = _Write(queue, processed)
            if writing is not None:
                acknowledged += writing.finish(held)
                if backlog:
                    # Still a backlog: chain to the next job instead of waiting for the dispatcher.
                    enqueue_batch_jobs(Queue(BATCH_QUEUE, connection=runtime.redis_client()), 1)
        except ShutdownWhileWaiting:
            give_back = True
            log.info("shutdown while the store is unavailable: batches released for re-claim")
        except StoreGaveUp:
            give_back = True
            raise
        finally:
            _settle(claiming, writing, held)
            if give_back:
                queue.release(*held)
    return acknowledged
