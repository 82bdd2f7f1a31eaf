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
main thread was, SIGTERM's default action killed the process). Every ``hitstream`` command loads
its modules with the stop signals held (hitstream.launch), and a Ctrl-C that came meanwhile
stops it once it is loaded.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from tests.ports import free_port
from tests.procs import HELD_CTRL_C, HITSTREAM, Commands

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


# The ``hitstream`` command as its script runs it, recording in order each module imported
# once hitstream.launch is loaded, with whether the stop signals were held (blocked) then, and
# the moment the command released them.
_RECORDED = """
import json, signal, sys
imports = []
def record(event, args):
    launch_loaded = hasattr(sys.modules.get("hitstream.launch"), "main")
    if event == "import" and launch_loaded:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        imports.append([args[0], {{signal.SIGINT, signal.SIGTERM}} <= blocked])
sys.addaudithook(record)
sys.argv = ["hitstream", *{arguments!r}]
from hitstream.launch import main
import shared.stop_signals
release = shared.stop_signals.release_stop_signals
def recorded_release():
    imports.append(["(released)", False])
    release()
shared.stop_signals.release_stop_signals = recorded_release
try:
    main()
finally:
    print(json.dumps(imports), flush=True)
"""


@pytest.mark.parametrize(
    ("arguments", "command_module", "released"),
    [
        (["stats", "--site", "nothing-here.example"], "hitstream.commands.store", True),
        (["sites", "list"], "hitstream.commands.control", True),
        (["worker", "--help"], "hitstream.commands.worker", False),  # it keeps them held for its watch
        (["up", "--help"], "hitstream.up", False),
    ],
)
def test_every_module_a_command_loads_is_imported_with_the_stop_signals_held(
    commands: Commands, hitstream_env: dict[str, str], arguments: list[str], command_module: str, released: bool
) -> None:
    # A Ctrl-C during an import raised KeyboardInterrupt there, and in a weakref callback of the
    # import system Python only printed "Exception ignored": a worker ran on (CI, 2026-12-07).
    child = commands.run(
        [sys.executable, "-c", _RECORDED.format(arguments=arguments)],
        env=hitstream_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    imports = [(name, held) for name, held in json.loads(child.stdout.splitlines()[-1])]
    names = [name for name, _ in imports]
    loading = imports[: names.index("(released)")] if released else imports

    assert {"click", "redis", "hitstream.main", command_module} <= {name for name, _ in loading}, child.stderr
    assert [name for name, held in loading if not held] == [], child.stderr
    if released:
        # Past the load Ctrl-C is the command's again: stats imports its reader as it runs.
        after = imports[names.index("(released)") + 1 :]
        assert after and not any(held for _, held in after), child.stderr
        if arguments[0] == "stats":
            assert ("workers.stats_reader", False) in after, child.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_the_api_starts_ends_it_once_its_redis_check_is_over(
    commands: Commands, hitstream_env: dict[str, str], signum: signal.Signals
) -> None:
    with socket.socket() as silent:
        # A Redis that takes the connection and never answers: the API's start-up check waits
        # its 5 s there, with the stop signals held, and the test sees it wait (the accept).
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {**hitstream_env, "HITSTREAM_REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}
        api = commands.start([HITSTREAM, "api", "--port", str(free_port())], env=env, stderr=subprocess.PIPE, text=True)
        connection, _ = silent.accept()
        with connection:
            api.send_signal(signum)
            _, stderr = api.communicate(timeout=60)

    if signum == signal.SIGINT:
        assert (api.returncode, stderr.splitlines()[-1]) == (1, "Aborted!"), stderr
    else:
        assert api.returncode == -signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "serving" not in stderr.lower() and "Uvicorn running" not in stderr


@pytest.mark.parametrize(
    ("arguments", "exit_code", "said"),
    [
        (["sites", "list"], 1, "Aborted!"),  # released once its module is loaded
        (["api", "--port", "0"], 1, "Aborted!"),  # released before uvicorn starts
        (["worker"], 0, "stopping on request"),  # its watch: a warm shutdown, even while it starts
    ],
    ids=["sites list", "api", "worker"],
)
def test_a_ctrl_c_that_came_while_a_command_loaded_stops_it_once_loaded(
    commands: Commands, hitstream_env: dict[str, str], arguments: list[str], exit_code: int, said: str
) -> None:
    ended = commands.run(
        [sys.executable, "-c", HELD_CTRL_C, HITSTREAM, *arguments],
        env=hitstream_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert ended.returncode == exit_code, ended.stderr
    assert said in ended.stderr and "Traceback" not in ended.stderr, ended.stderr
