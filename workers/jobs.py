"""RQ job functions: ``process_batch``, the unit of batch work.

A job claims one batch (up to HITSTREAM_BATCH_SIZE envelopes), runs each envelope through
the pipeline, writes rows and drop counts in one insert keyed by the batch id, and only then
acknowledges the batch (together with its dead letters, in one transaction). A crash at any
point before the ack leaves the batch claimed; its lease expires and the next job re-claims
it under the same id, so ClickHouse deduplicates the repeated insert.
"""

from __future__ import annotations

import logging
import time

from rq import Queue

from shared.envelope import Envelope
from shared.queue_stats import BATCH_QUEUE
from workers import dead_letters, runtime
from workers.dead_letters import DeadLetter
from workers.queue import Batch, BatchQueue
from workers.records import Drop, PageviewRow

log = logging.getLogger(__name__)

# How long a job keeps retrying an unavailable store before it gives its batch back.
STORE_RETRY_SECONDS = 180.0
STORE_RETRY_FIRST_DELAY = 0.1
STORE_RETRY_MAX_DELAY = 10.0
JOB_TIMEOUT_SECONDS = int(STORE_RETRY_SECONDS) + 120


class StoreGaveUp(RuntimeError):
    """The store stayed unavailable past STORE_RETRY_SECONDS; the batch was released."""


def enqueue_batch_jobs(rq_queue: Queue, count: int) -> None:
    """Put ``count`` process_batch jobs on ``rq_queue`` in one round trip."""
    job_data = Queue.prepare_data(
        process_batch,
        timeout=JOB_TIMEOUT_SECONDS,
        result_ttl=0,
        description="hitstream process_batch",
    )
    rq_queue.enqueue_many([job_data] * count)


def _process(batch: Batch) -> tuple[list[PageviewRow], list[Drop], list[DeadLetter]]:
    from workers.pipeline import StepFailed

    pipeline = runtime.pipeline()
    rows: list[PageviewRow] = []
    drops: list[Drop] = []
    letters: list[DeadLetter] = []
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
        (drops if isinstance(outcome, Drop) else rows).append(outcome)
    return rows, drops, letters


def _write(queue: BatchQueue, batch: Batch, rows: list[PageviewRow], drops: list[Drop]) -> bool:
    """Write with exponential backoff while the store is unavailable.

    Returns False when a warm shutdown interrupted the wait (the batch was released for
    immediate re-claim); raises StoreGaveUp after STORE_RETRY_SECONDS.
    """
    from workers.store.store import StoreUnavailable

    deadline = time.monotonic() + STORE_RETRY_SECONDS
    delay = STORE_RETRY_FIRST_DELAY
    while True:
        try:
            runtime.current_store().write_batch(batch.id, rows, drops)
            return True
        except StoreUnavailable as error:
            if time.monotonic() + delay > deadline:
                queue.release(batch.id)
                raise StoreGaveUp(f"store unavailable for {STORE_RETRY_SECONDS:.0f} s: {error}") from error
            log.warning("batch %s: store unavailable, retrying in %.1f s: %s", batch.id, delay, error)
        if runtime.shutdown_requested.wait(delay):
            queue.release(batch.id)
            log.info("batch %s: released for re-claim (shutdown while the store is unavailable)", batch.id)
            return False
        delay = min(delay * 2, STORE_RETRY_MAX_DELAY)


def process_batch() -> int:
    """Claim, process, store and acknowledge one batch; returns its number of envelopes."""
    settings = runtime.settings()
    queue = runtime.batch_queue()
    batch = queue.claim(settings.batch_size)
    if batch is None:
        return 0
    with queue.lease_kept(batch.id):
        rows, drops, letters = _process(batch)
        if not _write(queue, batch, rows, drops):
            return 0
    with runtime.redis_client().pipeline(transaction=True) as pipe:
        dead_letters.record(pipe, letters)
        queue.ack(batch, pipe)
        pipe.execute()
    if letters:
        log.warning("batch %s: %d envelope(s) sent to dead letters", batch.id, len(letters))
    if len(batch.entries) >= settings.batch_size:
        # Under load, chain straight to the next batch instead of waiting for the dispatcher.
        enqueue_batch_jobs(Queue(BATCH_QUEUE, connection=runtime.redis_client()), 1)
    return len(batch.entries)
