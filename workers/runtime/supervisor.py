"""The supervisor of ``hitstream worker -n N``: one child process per role, each replaced when
it dies, SIGTERM/SIGINT forwarded to each as a warm shutdown.

It imports what a worker process runs (Arrow, the engine, RQ, the pipeline) only in its
children: a supervisor only starts, watches and stops them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from shared.stack_dumps import dump_stacks_on_signal
from shared.stop_signals import STOP_SIGNALS, watch_stop_signals
from workers.host import metrics_endpoint
from workers.runtime.roles import Role

if TYPE_CHECKING:
    from workers.batch.loop import Overlaps


# How often the supervisor looks for a child that died (and starts its replacement).
SUPERVISE_SECONDS = 0.2
# How often a supervised child checks that its supervisor still runs.
ORPHAN_CHECK_SECONDS = 1.0


def _run_child(role: Role, overlaps: Overlaps | None, parent: int) -> None:
    """A supervised worker process, which shuts down warmly when its supervisor is gone (even
    SIGKILLed): an orphaned writer would keep the embedded store from the next supervisor's.
    A spawned child does not run ``hitstream.main``: it registers its stack dumps itself."""
    dump_stacks_on_signal()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, name="hitstream-parent-watch", daemon=True).start()
    from workers.runtime.processes import run_worker_process  # here: only the child loads it

    run_worker_process(role, overlaps, supervised=True)


def run_processes(roles: list[Role], overlaps: Overlaps | None = None) -> None:
    """One child process per role, until SIGTERM/SIGINT here, which is forwarded to each as
    SIGTERM (a warm shutdown). A child that dies (a crash, a SIGKILL) is replaced in its role:
    its batches wait, leased or in the enriched stream, for whoever takes its place. A child
    that exits cleanly (after its own warm shutdown) is not."""
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start(n: int, role: Role) -> BaseProcess:
        child = spawn.Process(target=_run_child, args=(role, overlaps, os.getpid()), name=f"hitstream-{role}-{n}")
        # The child inherits the blocked stop signals (a signal mask survives exec) until its
        # handlers are in place (run_worker_process): a Ctrl-C or SIGTERM that comes while it
        # imports or builds its context waits for them instead of killing it (exit -15) or
        # raising KeyboardInterrupt (exit 1). CPython starts its resource tracker the same way,
        # then unblocks both signals: it is started first, so starting the child does not.
        resource_tracker.ensure_running()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return child

    # Before any child exists: a stop that comes while they start still reaches each of them.
    watch_stop_signals(stopping)
    children = [start(n, role) for n, role in enumerate(roles)]
    log = logging.getLogger(__name__)
    while not stopping.wait(SUPERVISE_SECONDS):
        for n, child in enumerate(children):
            if child.exitcode not in (None, 0) and not stopping.is_set():
                log.warning("%s died (exit code %s); starting its replacement", child.name, child.exitcode)
                _exited(child)
                children[n] = start(n, roles[n])
        if all(child.exitcode == 0 for child in children):
            break
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join()
        _exited(child)
        if child.exitcode != 0:
            log.warning("%s stopped with exit code %s", child.name, child.exitcode)


def _exited(child: BaseProcess) -> None:
    """The host's metrics stop counting ``child`` as live."""
    if child.pid is not None:
        metrics_endpoint.process_exited(child.pid)
