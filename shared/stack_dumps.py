"""Every thread's Python stack, written to the process's stderr (its log) on SIGUSR1.

How an operator, or a test whose process did not stop in time (tests/procs.py), sees where a
running hitstream process is: ``kill -USR1 <pid>``. The dump is written by the signal
handler's C part (``faulthandler``), so it comes even while the main thread waits in a
library's native code, where a Python handler would not run until that call returned. The
process goes on as before.
"""

from __future__ import annotations

import faulthandler
import signal

DUMP_SIGNAL = signal.SIGUSR1


def dump_stacks_on_signal() -> None:
    """From now on, ``DUMP_SIGNAL`` writes every thread's stack to stderr."""
    faulthandler.register(DUMP_SIGNAL, all_threads=True)
