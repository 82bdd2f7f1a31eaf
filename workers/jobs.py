"""RQ job functions. Each takes the worker's context (workers.context) as its first argument,
passed by the worker that runs it (workers.process.ContextJob); the rest are the job's own.

``process_batch``: one run of the batch loop (workers.loop); under load it enqueues its
successor, so a backlog does not wait for the dispatcher.
"""

from __future__ import annotations

from rq import Queue

from shared.keys import BATCH_QUEUE
from workers.context import WorkerContext
from workers.delivery import STORE_RETRY_SECONDS
from workers.loop import CHAIN_SECONDS, BatchLoop

JOB_TIMEOUT_SECONDS = int(CHAIN_SECONDS + STORE_RETRY_SECONDS) + 120


def enqueue_batch_jobs(rq_queue: Queue, count: int) -> None:
    """Put ``count`` process_batch jobs on ``rq_queue`` in one round trip."""
    job_data = Queue.prepare_data(
        process_batch,
        timeout=JOB_TIMEOUT_SECONDS,
        result_ttl=0,
        description="hitstream process_batch",
    )
    rq_queue.enqueue_many([job_data] * count)


def process_batch(context: WorkerContext) -> int:
    """Claim, process, deliver batches (workers.loop); returns the envelopes delivered."""
    outcome = BatchLoop(context).run()
    if outcome.acknowledged and outcome.backlog:
        # Still a backlog: chain to the next job instead of waiting for the dispatcher.
        enqueue_batch_jobs(Queue(BATCH_QUEUE, connection=context.redis), 1)
    return outcome.acknowledged
