"""The ``hitstream`` command. Each sub-command lives next to the code it drives and is
imported only when used, so ``hitstream api`` never loads ClickHouse and vice versa.

Every failure an operator causes prints one line on stderr, never a traceback: a malformed
or out-of-range argument exits 2 (``ArgumentError``, also click's own usage errors, which
would otherwise print the usage block too), a Redis that start-up refuses exits 1.
"""

from __future__ import annotations

import importlib
import sys

import click

from shared.config import ConfigError
from shared.hosts import normalise_domain
from shared.redis_safety import UnsafeRedis

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "api": "ingest_api.cli:api",
    "sites": "shared.control.cli:sites",
    "tokens": "shared.control.cli:tokens",
    "exclusions": "shared.control.cli:exclusions",
    "migrate": "workers.store.cli:migrate",
    "stats": "workers.store.cli:stats",
    "worker": "workers.cli:worker",
    "dead-letters": "workers.cli:dead_letters",
    "queue": "workers.cli:queue",
    "up": "shared.up:up",
    "replay": "shared.replay.cli:replay",
}


class ArgumentError(click.ClickException):
    """A command-line argument is malformed or out of range: one line, exit code 2."""

    exit_code = 2


class DomainType(click.ParamType):
    """A site's domain (a URL works too), in normal form; a malformed one is an ArgumentError."""

    name = "domain"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return normalise_domain(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


DOMAIN = DomainType()


class LazyGroup(click.Group):
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

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
def cli() -> None:
    """hitstream: queue-decoupled ingest for trusted server-side pageviews."""


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as error:
        click.echo(f"hitstream: configuration error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
