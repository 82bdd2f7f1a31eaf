"""A stop signal that lands while the main thread holds the lock of its stop flag still stops
the process (shared.stop_signals): the worker processes and their supervisor, ``hitstream up``,
and an RQ worker's own handlers, each in a child process of its own (the handlers are real).

Python runs a signal's handler in the main thread, between two of its bytecodes; a handler
that set a ``threading.Event`` took the lock of the Event's condition, which the main thread
holds for a moment in each ``Event.wait`` (a supervisor waits on its flag five times a
second). A signal landing in that moment made the main thread wait for a lock it held: the
process never stopped. Each case holds that lock, signals itself, and must then see its flag
set.

A stop signal that comes while a process starts, held until its watch is in place, sets the flag
then, and does nothing on the way (Python's SIGINT handler raised KeyboardInterrupt wherever the
main thread was, SIGTERM's default action killed the process).
"""

from __future__ import annotations

import signal
import sys

import pytest

from tests.procs import Commands

# The child: ``MAKE`` builds the flag the way the component does (its handlers installed);
# then, holding the flag's lock, the process sends itself SIGTERM, so the handler runs there.
_CHILD = """
import os, signal, threading
{make}
with flag._cond:
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(1000))  # bytecodes, between which Python runs the handler
print("the handler returned", flush=True)
print("stopped" if flag.wait(10) else "not stopped", flush=True)
"""

FLAGS = {
    "watch_stop_signals (worker processes, their supervisor)": """
from shared.stop_signals import watch_stop_signals
flag = threading.Event()
watch_stop_signals(flag)
""",
    "hitstream up": """
from hitstream.up import StopRequest
flag = StopRequest().event
""",
    "an RQ worker's own handlers": """
import fakeredis
from rq import Queue
from shared.stop_signals import watch_stop_signals
from tests.worker_context import worker_context_for
from workers.runtime.processes import BatchWorker
client = fakeredis.FakeRedis()
context = worker_context_for(client, store=None)
watch_stop_signals(context.shutdown_requested)
worker = BatchWorker(context, [Queue("q", connection=client)])
worker._install_signal_handlers()  # RQ's own, as its work loop installs them
flag = context.shutdown_requested
""",
}


@pytest.mark.parametrize("component", list(FLAGS))
def test_a_stop_signal_landing_while_the_main_thread_holds_its_flags_lock_still_stops_it(
    commands: Commands, component: str
) -> None:
    child = commands.run(
        [sys.executable, "-c", _CHILD.format(make=FLAGS[component])], capture_output=True, text=True, timeout=20
    )

    assert child.stdout.splitlines() == ["the handler returned", "stopped"], child.stderr
    assert child.returncode == 0


# The child: a process that holds the stop signals at its start, as ``hitstream worker`` does,
# signals itself, goes on starting, and only then watches for them.
_HELD = """
import os, signal, threading
from shared.stop_signals import hold_stop_signals, watch_stop_signals
hold_stop_signals()
os.kill(os.getpid(), signal.{name})
import decimal  # start-up goes on
print("started", flush=True)
flag = threading.Event()
watch_stop_signals(flag)
print("stopped" if flag.wait(10) else "not stopped", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_held_while_a_process_starts_sets_its_flag_once_it_watches(
    commands: Commands, signum: signal.Signals
) -> None:
    child = commands.run(
        [sys.executable, "-c", _HELD.format(name=signum.name)], capture_output=True, text=True, timeout=20
    )

    assert child.stdout.splitlines() == ["started", "stopped"], child.stderr
    assert child.returncode == 0
