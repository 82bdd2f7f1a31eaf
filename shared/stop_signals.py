"""Stop signals (SIGTERM, SIGINT) turned into a ``threading.Event``, with no lock taken in the
signal handler: the worker processes, their supervisor and ``hitstream up`` stop this way.

A handler that sets an Event takes the lock of the Event's condition, and the main thread,
where Python runs every handler, holds that same lock for a moment in each call to the Event's
``wait``: a signal landing in that moment ran the handler inside the wait, which then waited
for a lock its own thread held, and the process never stopped. Here the Python-level handler
does nothing. Its C part, run in whichever thread took the signal, writes the signal's number
to the wakeup fd (``signal.set_wakeup_fd``), and a thread of its own (``StopSignalWatch``)
reads it and sets the Event.

That thread also hears a signal the main thread is not ready for: Linux hands a signal sent
to a process to any thread that does not block it, and Python runs the handler in the main
thread only once that thread is back in Python. A worker's job can wait on a thread that itself
waits for the flag (the write-behind delivery of a batch while the store writer's stream is
full): with the signal taken by another thread, neither moved until the writer drained its
stream (tests/test_worker_scale_out.py).

A process that must stop cleanly holds the stop signals from its start (``hold_stop_signals``;
``hitstream.launch`` for every ``hitstream`` command) until its watch is in place: held
(blocked), a signal waits for the watch instead of acting on the way. Python's own SIGINT
handler raises KeyboardInterrupt wherever the main thread is, and where Python ignores
exceptions (a weakref callback inside an import, a ``__del__``) it only prints "Exception
ignored": a worker Ctrl-C'd while it imported went on running, and the signal was spent (CI,
2026-12-07). SIGTERM's default action ends the process before its ``finally`` blocks run.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler of a stop signal: nothing (``StopSignalWatch`` sets the flag).
    It is there so that the signal neither ends the process nor raises KeyboardInterrupt."""


def install_stop_handlers(ignore_sigint: bool = False) -> None:
    """``on_stop_signal`` for SIGTERM, and for SIGINT unless ``ignore_sigint`` (a supervised
    worker process: a terminal's Ctrl-C reaches the whole process group, and its supervisor
    turns it into one SIGTERM for each child)."""
    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else on_stop_signal)


class StopSignalWatch(threading.Thread):
    """Sets ``flag`` whenever a stop signal arrives, whatever Python-level handler it has
    (``on_stop_signal``, RQ's): made in the main thread, as ``set_wakeup_fd`` requires, once
    per process."""

    def __init__(self, flag: threading.Event) -> None:
        super().__init__(name="hitstream-stop-signals", daemon=True)
        self.flag = flag
        self._numbers, written = os.pipe()
        os.set_blocking(written, False)
        signal.set_wakeup_fd(written)

    def run(self) -> None:
        while True:
            if not STOP_SIGNALS.isdisjoint(os.read(self._numbers, 64)):
                self.flag.set()


def hold_stop_signals() -> None:
    """Block the stop signals in this thread, and in the threads and processes it starts, until
    ``watch_stop_signals`` (see the module docstring)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def watch_stop_signals(flag: threading.Event, ignore_sigint: bool = False) -> None:
    """From now on a stop signal sets ``flag`` and does nothing else (see the module docstring);
    one held until now (``hold_stop_signals``) sets it at once. The signals are held while the
    watch and its handlers are put in place, so none comes between the two."""
    hold_stop_signals()
    StopSignalWatch(flag).start()
    install_stop_handlers(ignore_sigint)
    release_stop_signals()


def release_stop_signals() -> None:
    """End ``hold_stop_signals``: a stop signal held until now acts at once, as if it came now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
