"""The ``hitstream`` command. Each sub-command lives next to the code it drives and is
imported only when used, so ``hitstream api`` never loads ClickHouse and vice versa."""

from __future__ import annotations

import importlib
import sys

import click

from shared.config import ConfigError

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


class LazyGroup(click.Group):
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
