"""A worker's warm shutdown ends cleanly wherever the signal finds it.

RQ's own SIGTERM handler stops an idle worker by raising StopRequested, wherever the main
thread is. Code that catches ``Exception`` there (a logging handler, a library's cleanup)
swallowed it, and RQ had already replaced its SIGTERM handler by the cold-shutdown one: the
worker went on taking jobs until killed, and an idle worker whose queue gets no jobs (a
writer) waited for one until killed. So hitstream's handler raises nothing: it sets the flag
that RQ's loop reads before each job, and the idle wait reads each second.

A cold shutdown (a second signal) still raises SystemExit wherever the main thread is:
between a command and its reply, that connection goes back to redis-py's pool with the reply
unread, and registering the worker's death read the stale reply instead: "Wrong number of
response items". These tests leave a connection in that state, as the signal does, and tear
the worker down.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis
from rq import Queue, Worker

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


def sigterm(worker: BatchWorker) -> list[BaseException]:
    """What RQ's SIGTERM handler does to ``worker``, wherever the main thread is; returns what
    it raised there (nothing: hitstream's handler only sets the stop flag)."""
    try:
        worker.request_stop(signal.SIGTERM, None)
    except BaseException as raised:  # noqa: BLE001  (what the handler raised, to assert on)
        return [raised]
    return []


def test_a_sigterm_between_jobs_raises_nothing_where_it_lands_and_stops_the_worker_before_its_next_job(
    real_redis: redis.Redis,
) -> None:
    queue = Queue(BATCH_QUEUE, connection=real_redis)
    worker = BatchWorker(worker_context_for(real_redis, store=None), [queue])
    enqueue_batch_jobs(queue, 2)
    heartbeat = worker.heartbeat
    raised: list[list[BaseException]] = []

    def sigterm_between_jobs(*args: object, **kwargs: object) -> None:
        heartbeat(*args, **kwargs)
        if worker.get_state() == "idle" and not raised:  # between jobs
            raised.append(sigterm(worker))

    worker.heartbeat = sigterm_between_jobs  # type: ignore[method-assign]

    worker.work(burst=True)  # burst: returns once the queue is empty, even if the stop is lost

    assert raised == [[]]
    # RQ takes the job its dequeue was already waiting for, then stops: one job stays queued.
    assert queue.count == 1


class _StillWaiting(Exception):
    """The worker went on waiting for jobs after its stop (the test ends its loop with this)."""


def test_a_sigterm_to_an_idle_worker_whose_queue_stays_empty_raises_nothing_and_stops_it_within_one_wait(
    real_redis: redis.Redis,
) -> None:
    queue = Queue(BATCH_QUEUE, connection=real_redis)  # empty, and no job ever comes: a writer's
    worker = BatchWorker(worker_context_for(real_redis, store=None), [queue])
    heartbeat = worker.heartbeat
    raised: list[list[BaseException]] = []
    waits_after_the_stop = 0

    def sigterm_while_idle(*args: object, **kwargs: object) -> None:
        nonlocal waits_after_the_stop
        heartbeat(*args, **kwargs)  # RQ's idle loop beats once before each wait for a job
        if raised:
            waits_after_the_stop += 1
            if waits_after_the_stop == 5:
                raise _StillWaiting  # RQ's work loop logs it and quits
        elif worker.get_state() == "idle":
            raised.append(sigterm(worker))

    worker.heartbeat = sigterm_while_idle  # type: ignore[method-assign]

    worker.work()  # not burst: without the stop it would wait for jobs for good

    assert raised == [[]]
    # The wait under way when the stop came may end in one more beat (RQ's idle clock is read
    # in whole seconds); RQ's own loop beat on until the test ended it.
    assert waits_after_the_stop <= 1
