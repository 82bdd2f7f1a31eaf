"""The ``hitstream`` command: one group holding every sub-command, each defined in the
module of ``hitstream.commands`` named after its subject.

Every failure an operator causes prints one line on stderr, never a traceback: a malformed
or out-of-range argument exits 2 (``ArgumentError``, also click's own usage errors, which
would otherwise print the usage block too), a Redis that start-up refuses exits 1.
"""

from __future__ import annotations

import sys

import click

from hitstream import up
from hitstream.arguments import ArgumentError
from hitstream.commands import api, control, crawlers, geoip, replay, store, worker
from shared.config import ConfigError
from shared.redis_safety import UnsafeRedis


class HitstreamGroup(click.Group):
    """Turns usage errors and a refused Redis into one line each (see the module docstring)."""

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


for command in (
    api.api,
    control.sites,
    control.tokens,
    control.exclusions,
    store.migrate,
    store.stats,
    worker.worker,
    worker.dead_letters,
    worker.queue,
    geoip.geoip,
    crawlers.crawlers,
    up.up,
    replay.replay,
):
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as error:
        click.echo(f"hitstream: configuration error: {error}", err=True)
        sys.exit(2)
