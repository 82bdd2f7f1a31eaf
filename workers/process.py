"""Worker processes: build the context, open the store, then work RQ queues until a warm
shutdown; ``run_processes`` runs several and forwards SIGTERM/SIGINT to each.

Three roles (``Role``):
- ``WORKER``: claims, processes, stores and acknowledges (one process on an embedded store,
  or each of N with a ClickHouse server); answers stats queries when its store is embedded;
- ``ENRICHER``: claims and processes, then hands each batch to the store writer;
- ``WRITER``: owns the embedded store: stores and acknowledges what enrichers hand it
  (workers.writer) and answers stats queries.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import signal
from types import FrameType
from typing import Any

from rq import Queue, SimpleWorker
from rq.job import Job

from shared.config import load_settings
from shared.keys import BATCH_QUEUE, STORE_QUEUE
from workers.context import Overlaps, WorkerContext
from workers.dispatcher import Dispatcher
from workers.redis_rewrite import RewriteTrigger
from workers.store.store import StoreUnavailable
from workers.writer import StoreWriter


class Role(enum.StrEnum):
    WORKER = "worker"
    ENRICHER = "enricher"
    WRITER = "writer"


class ContextJob(Job):
    """An RQ job whose function receives the worker's context as its first argument."""

    context: WorkerContext

    def _execute(self) -> Any:
        return self.func(self.context, *self.args, **self.kwargs)


class BatchWorker(SimpleWorker):
    """RQ's SimpleWorker (no fork per job: the store client and caches stay warm) that passes
    its context to every job, and whose warm shutdown also tells a job waiting on the store
    or on the writer to give its batches back."""

    job_class = ContextJob

    def __init__(self, context: WorkerContext, queues: list[Queue]) -> None:
        super().__init__(queues, connection=context.redis, job_class=ContextJob)
        self.context = context

    def execute_job(self, job: Job, queue: Queue) -> None:
        if isinstance(job, ContextJob):
            job.context = self.context
        super().execute_job(job, queue)

    def handle_warm_shutdown_request(self) -> None:
        self.context.shutdown_requested.set()
        super().handle_warm_shutdown_request()


def _open_store_early(context: WorkerContext) -> None:
    """Open and migrate the store now, so stats queries work before the first batch. A store
    that is down is not fatal: batches stay claimed (or enriched) and wait until it is back."""
    try:
        context.store.get()
    except StoreUnavailable as error:
        logging.getLogger(__name__).warning("store not available yet, batches will wait: %s", error)


def run_worker_process(role: Role = Role.WORKER, overlaps: Overlaps | None = None) -> None:
    """One worker process in ``role`` (see the module docstring), until a warm shutdown."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(process)d %(name)s: %(message)s")
    context = WorkerContext.build(settings, hand_off=role is Role.ENRICHER, overlaps=overlaps)
    client = context.redis
    batch_queue = Queue(BATCH_QUEUE, connection=client)
    # The store queue carries read queries (hitstream stats); with an embedded chdb store
    # only the process that opened it can answer them.
    store_queue = Queue(STORE_QUEUE, connection=client)
    threads: list[Dispatcher | RewriteTrigger | StoreWriter] = []
    queues = []
    if role is not Role.ENRICHER:
        _open_store_early(context)
        queues.append(store_queue)
    if role is Role.WRITER:
        threads.append(StoreWriter(context))
    else:
        context.pipeline()  # GeoIP readers, UA parser and spam lists loaded before the first claim
        threads += [
            Dispatcher(client, batch_queue, settings.batch_size),
            RewriteTrigger.from_settings(client, settings),
        ]
        queues.insert(0, batch_queue)
    worker = BatchWorker(context, queues)
    for thread in threads:
        thread.start()
    try:
        worker.work(logging_level=settings.log_level)
    finally:
        context.shutdown_requested.set()
        for thread in threads:
            if isinstance(thread, StoreWriter):
                thread.join()
            else:
                thread.stop()


def run_processes(roles: list[Role], overlaps: Overlaps | None = None) -> None:
    """One child process per role; SIGTERM/SIGINT here is forwarded to each as SIGTERM."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=run_worker_process, args=(role, overlaps), name=f"hitstream-{role}-{n}")
        for n, role in enumerate(roles)
    ]
    for child in children:
        child.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: a warm shutdown in the child

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
