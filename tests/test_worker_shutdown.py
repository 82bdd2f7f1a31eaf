"""A worker's warm shutdown ends cleanly wherever the signal finds it.

RQ stops an idle worker by raising StopRequested from its SIGTERM handler, wherever the main
thread is: between a command and its reply, that connection goes back to redis-py's pool
with the reply unread, and RQ's next command on it (registering the worker's death) read
the stale reply instead: "Wrong number of response items", exit 1. These tests leave a
connection in that state, as the signal does, and shut the worker down.

Code that catches ``Exception`` where the signal lands (a logging handler, a library's
cleanup) swallows that StopRequested, and RQ has already replaced its SIGTERM handler by the
cold-shutdown one: the stop was lost, and the worker went on taking jobs until killed; an idle
worker whose queue gets no jobs (a writer) waited for one until killed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis
from rq import Queue, Worker
from rq.exceptions import StopRequested

from shared.keys import BATCH_QUEUE
from tests.worker_context import worker_context_for
from workers.runtime.jobs import enqueue_batch_jobs
from workers.runtime.processes import BatchWorker


def _command(connection: redis.connection.Connection) -> None:
    connection.send_command("SET", "hitstream:test:interrupted", "1")


def _transaction(connection: redis.connection.Connection) -> None:
    # What RQ's own heartbeat and maintenance pipelines send before reading anything.
    connection.send_packed_command(connection.pack_commands([("MULTI",), ("PING",), ("PING",), ("EXEC",)]))


def _blocking_read(connection: redis.connection.Connection) -> None:
    connection.send_command("BLPOP", "hitstream:test:nothing", "0.1")


@pytest.mark.parametrize("interrupted", [_command, _transaction, _blocking_read])
def test_a_warm_shutdown_after_an_interrupted_command_registers_the_workers_death(
    real_redis: redis.Redis, interrupted: Callable[[redis.connection.Connection], None]
) -> None:
    worker = BatchWorker(worker_context_for(real_redis, store=None), [Queue(BATCH_QUEUE, connection=real_redis)])
    worker.register_birth()
    pool = real_redis.connection_pool
    connection = pool.get_connection()
    interrupted(connection)  # ... and the signal's exception left before the reply was read
    pool.release(connection)

    worker.teardown()  # what RQ's work loop does after StopRequested

    assert worker.name not in {known.name for known in Worker.all(connection=real_redis)}
    assert real_redis.ping()


def swallowed_sigterm(worker: BatchWorker) -> None:
    """What RQ's SIGTERM handler does to an idle worker, where code catching Exception runs."""
    try:
        worker.request_stop(signal.SIGTERM, None)
    except StopRequested:
        pass  # swallowed where the signal landed


def test_a_warm_shutdown_whose_exception_is_swallowed_still_stops_the_worker_before_its_next_job(
    real_redis: redis.Redis,
) -> None:
    queue = Queue(BATCH_QUEUE, connection=real_redis)
    worker = BatchWorker(worker_context_for(real_redis, store=None), [queue])
    enqueue_batch_jobs(queue, 2)
    heartbeat = worker.heartbeat
    stops = []

    def sigterm_between_jobs(*args: object, **kwargs: object) -> None:
        heartbeat(*args, **kwargs)
        if worker.get_state() == "idle" and not stops:  # between jobs
            stops.append(signal.SIGTERM)
            swallowed_sigterm(worker)

    worker.heartbeat = sigterm_between_jobs  # type: ignore[method-assign]

    worker.work(burst=True)  # burst: returns once the queue is empty, even if the stop is lost

    assert stops == [signal.SIGTERM]
    # RQ takes the job its dequeue was already waiting for, then stops: one job stays queued.
    assert queue.count == 1


class _StillWaiting(Exception):
    """The worker went on waiting for jobs after its stop (the test ends its loop with this)."""


def test_a_warm_shutdown_whose_exception_is_swallowed_still_stops_an_idle_worker_whose_queue_stays_empty(
    real_redis: redis.Redis,
) -> None:
    queue = Queue(BATCH_QUEUE, connection=real_redis)  # empty, and no job ever comes: a writer's
    worker = BatchWorker(worker_context_for(real_redis, store=None), [queue])
    heartbeat = worker.heartbeat
    stops: list[signal.Signals] = []
    waits_after_the_stop = 0

    def sigterm_while_idle(*args: object, **kwargs: object) -> None:
        nonlocal waits_after_the_stop
        heartbeat(*args, **kwargs)  # RQ's idle loop beats once before each wait for a job
        if stops:
            waits_after_the_stop += 1
            if waits_after_the_stop == 5:
                raise _StillWaiting  # RQ's work loop logs it and quits
        elif worker.get_state() == "idle":
            stops.append(signal.SIGTERM)
            swallowed_sigterm(worker)

    worker.heartbeat = sigterm_while_idle  # type: ignore[method-assign]

    worker.work()  # not burst: without the stop it would wait for jobs for good

    assert stops == [signal.SIGTERM]
    # The wait under way when the stop came may end in one more beat (RQ's idle clock is read
    # in whole seconds); the old loop beat on until the test ended it.
    assert waits_after_the_stop <= 1
