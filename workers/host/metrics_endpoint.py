"""The worker host's metrics endpoint: every worker process of one ``hitstream worker`` summed
on one port (HITSTREAM_WORKER_METRICS_PORT, on HITSTREAM_WORKER_METRICS_HOST: loopback unless
opened), with prometheus-client's multiprocess mode.

``start`` removes the directories of worker commands that are gone, makes a fresh one
(workers.host.metrics_directory), points PROMETHEUS_MULTIPROC_DIR at it and serves the directory's
sum over HTTP from a thread of the calling process; ``HostEndpoint.stop`` removes it again. The worker processes (this
one with ``-n 1``, spawned children otherwise, which inherit the variable) then write their
values there. prometheus-client picks its value store when it is first imported, so ``start``
must run before anything in this process imports it (``hitstream worker`` calls it first);
this module imports it only inside its functions for that reason.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from workers.host.metrics_directory import MetricsDirectory, make_directory, sweep_directories

log = logging.getLogger(__name__)

_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class HostEndpoint:
    directory: MetricsDirectory
    server: Any  # the wsgiref server prometheus_client started

    def stop(self) -> None:
        try:
            self.server.shutdown()
            self.server.server_close()
        finally:
            self.directory.remove()


def start(port: int, address: str) -> HostEndpoint:
    """Serve the summed metrics of this host's worker processes on ``address``:``port``."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the worker metrics directory was set")
    sweep_directories()
    directory = make_directory()
    try:
        os.environ[_VARIABLE] = directory.path
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        registry.register(_ReadAgainWhileSizing(MultiProcessCollector(None, path=directory.path)))
        server, _ = start_http_server(port, addr=address, registry=registry)
    except BaseException:  # a port in use, an address this host lacks, a stop signal
        directory.remove()
        raise
    log.info("worker metrics on %s (all worker processes of this host)", listen_address(address, port))
    return HostEndpoint(directory, server)


def listen_address(address: str, port: int) -> str:
    """``address:port`` as an operator writes it (``[::1]:9108`` for an IPv6 address)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class _ReadAgainWhileSizing:
    """prometheus_client's MultiProcessCollector, read again when it meets the file of a process
    that is starting: prometheus_client creates a process's file and then sizes it, and a scrape
    in between reads 0 bytes and fails (struct.error; seen in about one test run in five while 3
    processes started). The file is sized microseconds later."""

    ATTEMPTS = 5

    def __init__(self, collector: Any) -> None:
        self._collector = collector

    def collect(self) -> list[Any]:
        for _ in range(self.ATTEMPTS - 1):
            try:
                return list(self._collector.collect())
            except struct.error:
                time.sleep(0.01)
        return list(self._collector.collect())


def process_exited(pid: int) -> None:
    """A worker process of this host exited: it no longer counts as live."""
    if os.environ.get(_VARIABLE):
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid)
