"""What a worker process is (its role): shared by the process itself
(workers.runtime.processes) and the supervisor that starts several
(workers.runtime.supervisor), which imports nothing heavier."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    WORKER = "worker"
    ENRICHER = "enricher"
    WRITER = "writer"
