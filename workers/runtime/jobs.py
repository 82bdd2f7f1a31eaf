"""RQ job functions. Each takes the worker's context (workers.runtime.context) as its first argument,
passed by the worker that runs it (workers.runtime.processes.ContextJob); the rest are the job's own.

``run_batch_loop``: one run of the batch loop (workers.batch.loop) with this process's
parts; under load it enqueues its successor, so a backlog does not wait for the dispatcher.
"""

from __future__ import annotations

from rq import Queue

from shared.keys import BATCH_QUEUE
from workers.batch.delivery import STORE_RETRY_SECONDS
from workers.batch.loop import CHAIN_SECONDS, BatchLoop
from workers.runtime.context import WorkerContext

JOB_TIMEOUT_SECONDS = int(CHAIN_SECONDS + STORE_RETRY_SECONDS) + 120


def enqueue_batch_jobs(rq_queue: Queue, count: int) -> None:
    """Put ``count`` run_batch_loop jobs on ``rq_queue`` in one round trip."""
    job_data = Queue.prepare_data(
        run_batch_loop,
        timeout=JOB_TIMEOUT_SECONDS,
        result_ttl=0,
        description="hitstream batch loop",
    )
    rq_queue.enqueue_many([job_data] * count)


def run_batch_loop(context: WorkerContext) -> int:
    """Claim, enrich, deliver batches (workers.batch.loop); returns the envelopes delivered."""
    outcome = BatchLoop(
        context.batch_queue,
        context.settings.batch_size,
        context.pipeline,
        context.delivery,
        context.overlaps,
        context.shutdown_requested,
    ).run()
    if outcome.acknowledged and outcome.backlog:
        # Still a backlog: chain to the next job instead of waiting for the dispatcher.
        enqueue_batch_jobs(Queue(BATCH_QUEUE, connection=context.redis), 1)
    return outcome.acknowledged
