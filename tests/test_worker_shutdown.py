"""A worker's warm shutdown ends cleanly wherever the signal finds it.

RQ stops an idle worker by raising StopRequested from its SIGTERM handler, wherever the main
thread is: between a command and its reply, that connection goes back to redis-py's pool
with the reply unread, and RQ's next command on it (registering the worker's death) read
the stale reply instead: "Wrong number of response items", exit 1. These tests leave a
connection in that state, as the signal does, and shut the worker down.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from rq import Queue, Worker

from shared.keys import BATCH_QUEUE
from tests.worker_context import worker_context_for
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
