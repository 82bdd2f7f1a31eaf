"""The dispatcher: keeps the RQ queue stocked with batch jobs while entries wait.

Every worker process runs one as a thread. A short Redis lock lets only one of them act per
tick, so several workers do not over-enqueue; a surplus job that finds nothing just
returns. Under load the jobs chain themselves (workers.runtime.jobs), so the dispatcher mostly
matters for a trickle of traffic and for recovering expired batches.
"""

from __future__ import annotations

import logging
import math
import threading

import redis
from rq import Queue, Worker

from shared import keys
from shared.backlog import queue_backlog
from workers.runtime.jobs import enqueue_batch_jobs

log = logging.getLogger(__name__)

TICK_SECONDS = 0.15


def jobs_wanted(waiting: int, expired_batches: int, batch_size: int, live_workers: int) -> int:
    """Queued jobs to aim for: one per batch of work, no more than workers can take."""
    batches = math.ceil(waiting / batch_size) + expired_batches
    return min(batches, max(live_workers, 1))


class Dispatcher(threading.Thread):
    def __init__(self, client: redis.Redis, rq_queue: Queue, batch_size: int) -> None:
        super().__init__(name="hitstream-dispatcher", daemon=True)
        self.redis = client
        self.rq_queue = rq_queue
        self.batch_size = batch_size
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(TICK_SECONDS):
            try:
                self.dispatch()
            except redis.RedisError as error:
                log.warning("dispatcher: Redis error, retrying next tick: %s", error)

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def dispatch(self) -> int:
        """Enqueue the batch jobs that are missing now; returns how many were enqueued."""
        if not self.redis.set(keys.DISPATCH_LOCK, 1, nx=True, px=int(TICK_SECONDS * 1000)):
            return 0
        backlog = queue_backlog(self.redis)
        if backlog.waiting == 0 and backlog.expired_batches == 0:
            return 0
        live_workers = Worker.count(connection=self.redis, queue=self.rq_queue)
        wanted = jobs_wanted(backlog.waiting, backlog.expired_batches, self.batch_size, live_workers)
        missing = wanted - self.rq_queue.count
        if missing <= 0:
            return 0
        enqueue_batch_jobs(self.rq_queue, missing)
        return missing
