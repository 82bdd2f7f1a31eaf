"""``hitstream crawlers update``: fetch each crawler operator's published address list and
swap the new ranges document in (hitstream.crawlers_update). Processes that read it
(HITSTREAM_CRAWLER_RANGES) pick it up by themselves."""

from __future__ import annotations

from pathlib import Path

import click

from hitstream.crawlers_update import DOWNLOAD_DEADLINE_SECONDS, RANGES_NAME, update_ranges
from shared.config import load_settings
from shared.crawlers.ranges import UnusableRanges
from shared.replaced_files import FILE_CHECK_SECONDS


@click.group()
def crawlers() -> None:
    """Crawler identities and their operators' published address ranges."""


@crawlers.command()
@click.option(
    "--dir",
    "directory",
    default="./var/crawlers",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Where {RANGES_NAME} is written (replaced atomically when it exists).",
)
@click.option(
    "--deadline",
    "deadline_seconds",
    default=DOWNLOAD_DEADLINE_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="How long each list's download may take in all (however slowly the server sends).",
)
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
    configured = load_settings().crawler_ranges
    if configured is not None and configured.resolve() == done.path:
        click.echo(f"running processes read it within {FILE_CHECK_SECONDS:.0f} s")
    else:
        click.echo(f"processes use it with HITSTREAM_CRAWLER_RANGES={done.path}")
    if done.failed:
        for key, why in done.failed.items():
            click.echo(f"kept the previous prefixes of {key}: {why}", err=True)
        raise click.exceptions.Exit(1)
