"""The ``hitstream`` command: one group holding every sub-command, each defined in the
module of ``hitstream.commands`` named after its subject (``up`` in ``hitstream.up``).

A sub-command's module is imported only when that command runs or its help is shown (click's
lazy loading of sub-commands): each module brings its own heavy libraries (aiohttp for
``replay``, uvicorn and Starlette for ``api``, Arrow and RQ for ``worker``), and every process
the command line starts paid for all of them (``hitstream stats --help``: 0.22 CPU-s against
0.51 when every module was imported, on the 2-core machine of 2026-12-06), a part of each
``stats`` call's wait.

Every failure an operator causes prints one line on stderr, never a traceback: a malformed
or out-of-range argument exits 2 (``ArgumentError``, also click's own usage errors, which
would otherwise print the usage block too), a Redis that start-up refuses exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from hitstream.arguments import ArgumentError
from shared.config import ConfigError
from shared.redis_safety import UnsafeRedis
from shared.stack_dumps import dump_stacks_on_signal
from shared.stop_signals import release_stop_signals


# The sub-commands each module defines, imported when one of them is asked for (a static
# import inside a function: the import picture still shows it).
def _api() -> list[click.Command]:
    from hitstream.commands import api

    return [api.api]


def _control() -> list[click.Command]:
    from hitstream.commands import control

    return [control.sites, control.tokens, control.exclusions]


def _store() -> list[click.Command]:
    from hitstream.commands import store

    return [store.migrate, store.stats]


def _worker() -> list[click.Command]:
    from hitstream.commands import worker

    return [worker.worker, worker.dead_letters, worker.queue]


def _geoip() -> list[click.Command]:
    from hitstream.commands import geoip

    return [geoip.geoip]


def _crawlers() -> list[click.Command]:
    from hitstream.commands import crawlers

    return [crawlers.crawlers]


def _up() -> list[click.Command]:
    from hitstream import up

    return [up.up]


def _replay() -> list[click.Command]:
    from hitstream.commands import replay

    return [replay.replay]


# Each sub-command's name and the loader of the module defining it.
SUB_COMMANDS: dict[str, Callable[[], list[click.Command]]] = {
    "api": _api,
    "sites": _control,
    "tokens": _control,
    "exclusions": _control,
    "migrate": _store,
    "stats": _store,
    "worker": _worker,
    "dead-letters": _worker,
    "queue": _worker,
    "geoip": _geoip,
    "crawlers": _crawlers,
    "up": _up,
    "replay": _replay,
}


# The commands that keep the stop signals held (hitstream.launch) until they can stop cleanly:
# the worker and ``up`` until their watch is in place (shared.stop_signals), the API until
# uvicorn starts, which installs its own handlers.
HOLD_PAST_LOADING = frozenset({"worker", "up", "api"})


class HitstreamGroup(click.Group):
    """Loads each sub-command when it is asked for; turns usage errors and a refused Redis into
    one line each (see the module docstring)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUB_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUB_COMMANDS:
            return None
        command = next(command for command in SUB_COMMANDS[cmd_name]() if command.name == cmd_name)
        if cmd_name not in HOLD_PAST_LOADING:
            # Its module is loaded (with the stop signals held: hitstream.launch); a Ctrl-C
            # that came meanwhile raises KeyboardInterrupt here, and click says "Aborted!".
            release_stop_signals()
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise  # shows the command's help, as asked
        except click.UsageError as error:
            where = f"{error.ctx.command_path}: " if error.ctx is not None else ""
            raise ArgumentError(where + error.format_message()) from None
        except UnsafeRedis as error:
            raise click.ClickException(f"refusing to start: {error}") from None


@click.group(cls=HitstreamGroup)
def cli() -> None:
    """hitstream: queue-decoupled ingest for trusted server-side pageviews."""


def main() -> None:
    dump_stacks_on_signal()
    try:
        cli(standalone_mode=True)
    except ConfigError as error:
        click.echo(f"hitstream: configuration error: {error}", err=True)
        sys.exit(2)
