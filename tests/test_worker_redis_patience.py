"""A worker's Redis client waits out a Redis that is away for ``HITSTREAM_WORKER_REDIS_PATIENCE``:
a command whose connection Redis keeps closing is sent again, with pauses that add up to the
patience, then fails (tests/test_faults_redis.py: what the worker does then); a patience that
is not a positive number stops start-up naming the variable."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis

from shared.config import ConfigError, load_settings
from workers.runtime.context import redis_client


class ClosingServer:
    """A TCP server that accepts every connection and closes it at once, counting them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            self.accepted += 1  # before the close the client sees as its attempt's failure
            connection.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("patience", "attempts", "paused"),
    [("0.3", 3, 0.3), ("1", 5, 1.5)],  # pauses of 0.1, 0.2, 0.4, 0.8, then 1 s
)
def test_a_workers_command_is_sent_again_for_its_patience_then_fails(
    patience: str, attempts: int, paused: float
) -> None:
    server = ClosingServer()
    settings = load_settings(
        {"HITSTREAM_REDIS_URL": f"redis://127.0.0.1:{server.port}/0", "HITSTREAM_WORKER_REDIS_PATIENCE": patience}
    )
    client = redis_client(settings)
    started = time.monotonic()
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        server.close()
    assert time.monotonic() - started >= paused
    assert server.accepted == attempts


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_patience_that_is_not_a_positive_number_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=f"HITSTREAM_WORKER_REDIS_PATIENCE={value!r} is invalid"):
        load_settings({"HITSTREAM_WORKER_REDIS_PATIENCE": value})
