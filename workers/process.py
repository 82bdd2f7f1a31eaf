"""A worker process: open and migrate the store, load the pipeline, then dispatch batch jobs
and work both RQ queues until a warm shutdown; ``run_processes`` runs several and forwards
SIGTERM/SIGINT to each."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
from types import FrameType

from rq import Queue, SimpleWorker

from shared.keys import BATCH_QUEUE, STORE_QUEUE
from workers import metrics, metrics_endpoint, runtime
from workers.dispatcher import Dispatcher
from workers.redis_rewrite import RewriteTrigger


class BatchWorker(SimpleWorker):
    """RQ's SimpleWorker (no fork per job: the store client and caches stay warm) whose warm
    shutdown also tells a job waiting on an unavailable store to give its batch back."""

    def handle_warm_shutdown_request(self) -> None:
        runtime.shutdown_requested.set()
        super().handle_warm_shutdown_request()


def _open_store_early() -> None:
    """Open and migrate the store now, so stats queries work before the first batch. A store
    that is down is not fatal: jobs keep their batches claimed and retry until it is back."""
    from workers.store.store import StoreUnavailable

    try:
        runtime.current_store()
    except StoreUnavailable as error:
        logging.getLogger(__name__).warning("store not available yet, batches will wait: %s", error)


def run_worker_process() -> None:
    """One worker process: migrate the store, dispatch, and work both RQ queues."""
    settings = runtime.settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(process)d %(name)s: %(message)s")
    client = runtime.redis_client()
    _open_store_early()
    runtime.pipeline()  # GeoIP readers, UA parser and spam lists loaded before the first claim
    metrics.process_started()
    batch_queue = Queue(BATCH_QUEUE, connection=client)
    dispatcher = Dispatcher(client, batch_queue, settings.batch_size)
    rewrites = RewriteTrigger.from_settings(client, settings)
    # The store queue carries read queries (hitstream stats); with an embedded chdb store
    # this process is the only one that can answer them.
    worker = BatchWorker([batch_queue, Queue(STORE_QUEUE, connection=client)], connection=client)
    dispatcher.start()
    rewrites.start()
    try:
        worker.work(logging_level=settings.log_level)
    finally:
        rewrites.stop()
        dispatcher.stop()


def run_processes(count: int) -> None:
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=run_worker_process, name=f"hitstream-worker-{i}") for i in range(count)]
    for child in children:
        child.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: a warm shutdown in the child

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # Each child as it exits (in any order), so the host's metrics stop counting it as live.
    running = {child.sentinel: child for child in children}
    while running:
        exited = multiprocessing.connection.wait(list(running))
        for sentinel in [sentinel for sentinel in running if sentinel in exited]:
            child = running.pop(sentinel)
            child.join()
            if child.pid is not None:
                metrics_endpoint.process_exited(child.pid)
