"""``hitstream crawlers update``: fetch each crawler operator's published address list and
swap the new ranges document in (hitstream.crawlers_update). Processes that read it
(HITSTREAM_CRAWLER_RANGES) pick it up by themselves."""

from __future__ import annotations

from pathlib import Path

import click

from hitstream.commands.file_updates import deadline_option, directory_option, say_how_processes_find
from hitstream.crawlers_update import DOWNLOAD_DEADLINE_SECONDS, RANGES_NAME, update_ranges
from shared.config import load_settings
from shared.crawlers.ranges import UnusableRanges


@click.group()
def crawlers() -> None:
    """Crawler identities and their operators' published address ranges."""


@crawlers.command()
@directory_option("./var/crawlers", RANGES_NAME)
@deadline_option(DOWNLOAD_DEADLINE_SECONDS, "each list's download")
def update(directory: Path, deadline_seconds: float) -> None:
    """Fetch every operator's published crawler address list from its own endpoint, check
    it, swap it in; a list that fails keeps its previous prefixes."""
    directory = directory.resolve()
    try:
        done = update_ranges(directory, deadline_seconds=deadline_seconds)
    except UnusableRanges as error:
        raise click.ClickException(f"no crawler range list could be fetched; nothing was replaced: {error}") from None
    ranges = done.ranges
    click.echo(
        f"installed {done.path}: {len(done.refreshed)} of {len(ranges.lists)} lists fetched,"
        f" {ranges.prefix_count:,} prefixes, oldest list of {ranges.snapshot}"
    )
    say_how_processes_find(done.path, load_settings().crawler_ranges, "HITSTREAM_CRAWLER_RANGES", "processes", "read")
    if done.failed:
        for key, why in done.failed.items():
            click.echo(f"kept the previous prefixes of {key}: {why}", err=True)
        raise click.exceptions.Exit(1)
