"""A worker process: build the context, open the store, then work RQ queues until a warm
shutdown (RQ's work loop started again whenever it quits without one: a Redis outage longer
than the client's patience makes it quit). ``workers.runtime.supervisor`` runs several.

Three roles (``workers.runtime.roles.Role``):
- ``WORKER``: claims, enriches, stores and acknowledges (one process on an embedded store,
  or each of N with a ClickHouse server); answers stats queries when its store is embedded
  (workers.runtime.stats_answers, a thread of its own);
- ``ENRICHER``: claims and enriches, then passes each batch to the store writer;
- ``WRITER``: the store writer, which owns the embedded store: stores and acknowledges what
  enrichers pass it (workers.batch.store_writer) and answers stats queries.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job

from shared.collector import tune_collector
from shared.config import load_settings
from shared.keys import BATCH_QUEUE, STORE_QUEUE
from shared.stop_signals import install_stop_handlers, watch_stop_signals
from workers.batch import metrics
from workers.batch.loop import Overlaps
from workers.batch.store_writer import StoreWriter
from workers.host.redis_rewrite import RewriteTrigger
from workers.runtime.context import WorkerContext
from workers.runtime.dispatcher import Dispatcher
from workers.runtime.roles import Role
from workers.runtime.stats_answers import StatsAnswers
from workers.store.dsn import chdb_path
from workers.store.unavailable import StoreUnavailable


class ContextJob(Job):
    """An RQ job whose function receives the worker's context as its first argument."""

    context: WorkerContext

    def _execute(self) -> Any:
        return self.func(self.context, *self.args, **self.kwargs)


# How long RQ's idle read for a job waits: the longest a stop waits for the main thread.
DEQUEUE_TIMEOUT_SECONDS = 1


class BatchWorker(SimpleWorker):
    """RQ's SimpleWorker (no fork per job: the store client and caches stay warm) that passes
    its context to every job, and whose stop signal handler only sets flags: RQ's, read before
    each job and each second of an idle wait, and (through ``StopSignalWatch``) the context's
    warm-shutdown flag, which tells a job waiting on the store or on the writer to give its
    batches back."""

    job_class = ContextJob

    # Linux hands a process its SIGTERM through any thread that does not block it (chdb starts
    # ~30 that don't), and Python runs the handler in the main thread only once that thread is
    # back in Python: waiting in RQ's idle BLPOP (405 s by default), it held a warm shutdown that
    # long (tests/test_worker_processes.py). A one-second BLPOP bounds the wait; RQ then sets a
    # socket timeout of 11 s (this plus 10) instead of 415 s, still above every blocking
    # command a worker sends (at most 0.5 s).
    dequeue_timeout = DEQUEUE_TIMEOUT_SECONDS

    def __init__(self, context: WorkerContext, queues: list[Queue], supervised: bool = False) -> None:
        super().__init__(queues, connection=context.redis, job_class=ContextJob)
        self.context = context
        self.supervised = supervised

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.supervised:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # see shared.stop_signals.install_stop_handlers
        if self.context.shutdown_requested.is_set():
            # The stop came before this work loop's handlers: it ends at once.
            self._stop_requested = True

    def execute_job(self, job: Job, queue: Queue) -> None:
        if isinstance(job, ContextJob):
            job.context = self.context
        super().execute_job(job, queue)

    def _shutdown(self) -> None:
        # The warm stop, called by RQ's SIGTERM/SIGINT handler: it only sets the flag, which
        # RQ's work loop reads before each job and an idle wait reads each second
        # (dequeue_job_and_maintain_ttl). RQ's own raises StopRequested there when the worker
        # is idle, wherever the main thread is, and (busy) writes to Redis from inside the
        # handler. Both faults its exception caused were met (tests/test_worker_shutdown.py):
        # code catching Exception where it landed swallowed it (the worker took jobs until
        # killed), and a command interrupted between request and reply went back to the pool
        # with its reply unread, which the next command on it read (exit 1).
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if timeout is None:  # burst: one look, None once the queues are empty
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        # RQ's idle loop waits for a job until one comes and never reads the stop flag (a
        # writer's queue may get none for good: the enrichers hand it batches through a
        # stream). One wait at a time here, the flags read between: RQ's, and the warm-shutdown
        # flag for a stop that came before RQ's handlers were in place (_install_signal_handlers
        # reads it, but StopSignalWatch may set it a moment after).
        while not (self._stop_requested or self.context.shutdown_requested.is_set()):
            found = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            if found is not None:
                return found
        raise StopRequested

    def teardown(self) -> None:
        # A cold shutdown (a second signal: RQ's handler raises SystemExit wherever the main
        # thread is) may leave a connection in the pool between a command and its reply, and
        # registering the worker's death would read that reply ("Wrong number of response
        # items"). The pool's idle connections are dropped first; the ones this process's
        # threads hold at the moment are theirs, and in step.
        self.connection.connection_pool.disconnect(inuse_connections=False)
        super().teardown()


def _open_store_early(context: WorkerContext) -> None:
    """Open and migrate the store now, so stats queries work before the first batch. A store
    that is down is not fatal: batches stay claimed (or enriched) and wait until it is back."""
    try:
        context.store.get()
    except StoreUnavailable as error:
        logging.getLogger(__name__).warning("store not available yet, batches will wait: %s", error)


def run_worker_process(role: Role = Role.WORKER, overlaps: Overlaps | None = None, supervised: bool = False) -> None:
    """One worker process in ``role`` (see the module docstring), until a warm shutdown
    (``supervised``: started by ``run_processes``, which forwards the signals)."""
    settings = load_settings()
    tune_collector()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(process)d %(name)s: %(message)s")
    context = WorkerContext.build(settings, hand_off=role is Role.ENRICHER, overlaps=overlaps)
    # A stop held since the command started (hitstream worker, or run_processes for a
    # supervised process) sets the flag now. Until an RQ worker installs its handlers (at
    # process start, and between two work loops), a stop only sets the warm-shutdown flag,
    # which the next work loop reads at once.
    watch_stop_signals(context.shutdown_requested, ignore_sigint=supervised)
    client = context.redis
    batch_queue = Queue(BATCH_QUEUE, connection=client)
    # The process that owns the store registers on the store queue, which names it.
    store_queue = Queue(STORE_QUEUE, connection=client)
    threads: list[Dispatcher | RewriteTrigger | StoreWriter] = []
    queues = []
    answers = None
    if role is not Role.ENRICHER:
        if chdb_path(settings.clickhouse_url) is not None:
            # Only this process can read its embedded store: it answers hitstream stats from
            # now on (a query that comes while the store is being opened waits for the opening).
            answers = StatsAnswers(context)
            answers.start()
        _open_store_early(context)
        queues.append(store_queue)
    if role is Role.WRITER:
        threads.append(StoreWriter(client, context.storing, context.shutdown_requested))
    else:
        context.pipeline()  # GeoIP readers, UA parser and spam lists loaded before the first claim
        threads += [
            Dispatcher(client, batch_queue, settings.batch_size),
            RewriteTrigger.from_settings(client, settings),
        ]
        queues.insert(0, batch_queue)
    metrics.process_started()
    for thread in threads:
        thread.start()
    try:
        _work_until_shutdown(context, queues, supervised)
    finally:
        context.shutdown_requested.set()
        for thread in threads:
            if isinstance(thread, StoreWriter):
                thread.join()
            else:
                thread.stop()
        if answers is not None:
            answers.stop()


# After RQ's work loop quit without a warm shutdown, the pause before the next one starts: a
# loop that quits at once (a bug) then costs one logged traceback a second, not a busy loop.
WORK_LOOP_RESTART_SECONDS = 1.0


def _work_until_shutdown(context: WorkerContext, queues: list[Queue], supervised: bool) -> None:
    """RQ's work loop, on a new RQ worker each time it quits without a warm shutdown.

    RQ 2.12 quits its loop on any error it does not expect, which a Redis outage longer than
    the client's patience becomes: the running job gives up (one patience,
    ``HITSTREAM_WORKER_REDIS_PATIENCE``, after its first refused command), then so does
    recording the job's failure (one more). Ending the process then
    would stop a single ``hitstream worker`` for good (nothing restarts it), and a supervisor
    replaces only children that crash, not one that returns (tests/test_faults_redis.py)."""
    log = logging.getLogger(__name__)
    while True:
        try:
            BatchWorker(context, queues, supervised).work(logging_level=context.settings.log_level)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            # Registering or unregistering the RQ worker gave up too: Redis is still away.
            log.warning("RQ's worker could not reach Redis: %s", error)
        if context.shutdown_requested.is_set():
            return
        install_stop_handlers(ignore_sigint=supervised)  # in place of the quitting loop's RQ handlers
        log.warning("RQ's work loop quit without a shutdown request; starting a new one")
        if context.shutdown_requested.wait(WORK_LOOP_RESTART_SECONDS):
            return
