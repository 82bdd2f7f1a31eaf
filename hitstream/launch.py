"""The ``hitstream`` command's entry point (and ``python -m hitstream``'s): it holds the stop
signals before any module of the command is imported.

A Ctrl-C that came while a command imported its modules raised KeyboardInterrupt wherever the
import was, and where Python ignores exceptions (a weakref callback inside an import) it only
printed "Exception ignored": the command ran on with the signal spent (a worker in CI,
2026-12-07). Held, a stop signal waits instead. ``worker``, ``api`` and ``up`` act on it once
they can stop cleanly (``hitstream.main.HOLD_PAST_LOADING``); every other command releases it
as soon as its module is loaded, where SIGINT stops it as Ctrl-C always did ("Aborted!").
"""

from __future__ import annotations

from shared.stop_signals import hold_stop_signals


def main() -> None:
    hold_stop_signals()
    from hitstream.main import main as run_command  # every import from here on with the signals held

    run_command()
