"""Free TCP ports on 127.0.0.1 for servers a test starts.

They come from below the kernel's ephemeral range (net.ipv4.ip_local_port_range), never from
it: a port there may become the local port of any outgoing connection between the moment a
test picks it and the moment its server binds it, and then the server cannot start (the
likely cause of a worker's metrics endpoint and a test's API lost while other tests opened
hundreds of connections). Each pytest process draws at random from a slice of its own (by
pytest-xdist's worker number), never hands out a port twice, and skips one something holds.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST = 10_000
# Pytest processes that may run side by side (pytest-xdist's workers: .ci/run uses four).
SLICES = 4


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _own_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    size = (_ephemeral_start() - LOWEST) // SLICES
    first = LOWEST + (int(worker) % SLICES if worker.isdigit() else 0) * size
    return range(first, first + size)


_handed_out: set[int] = set()
_draw = random.Random()


def free_port() -> int:
    candidates = [port for port in _own_slice() if port not in _handed_out]
    _draw.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # held by a server or a connection of some other program
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {_own_slice()}")
