"""What a worker process is (its role) and which signals stop one warm: shared by the
process itself (workers.runtime.processes) and the supervisor that starts several
(workers.runtime.supervisor), which imports nothing heavier."""

from __future__ import annotations

import enum
import signal


class Role(enum.StrEnum):
    WORKER = "worker"
    ENRICHER = "enricher"
    WRITER = "writer"


# The signals that stop a worker process warm.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
