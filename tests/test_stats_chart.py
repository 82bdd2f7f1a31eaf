"""``hitstream stats`` over time: pageviews per hour, day or month (gaps filled with 0), drawn
as a chart in the text report, left out of the ``--json`` document (unchanged), and the GeoIP
database's credit. Traffic: tests/test_stats.py's ``fill`` (March 2024, one pageview on 1 April)."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner

from hitstream.geoip_update import DBIP_CREDIT
from hitstream.main import cli
from tests import geoip_fixtures as geo
from tests.stores import pageview, utc
from tests.test_stats import LIST_KEYS, fill, stored_site
from workers.store.store import Store

JSON_KEYS = {"site", "site_id", "from", "to", "traffic", "pageviews", "visitors", "drops", "crawlers", *LIST_KEYS}


def test_a_month_of_traffic_is_counted_per_day_with_empty_days_as_zero(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    over_time = store.site_stats(site_id, None, None)["pageviews_over_time"]
    assert over_time["unit"] == "day"
    points = dict(over_time["points"])
    assert len(points) == 32  # 1 March to 1 April
    assert (points["2024-03-01"], points["2024-03-02"], points["2024-03-31"], points["2024-04-01"]) == (2, 2, 2, 1)
    assert points["2024-03-03"] == 0
    assert sum(points.values()) == 7


def test_a_short_range_is_counted_per_hour(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    over_time = store.site_stats(site_id, date(2024, 3, 1), date(2024, 3, 2))["pageviews_over_time"]
    assert over_time["unit"] == "hour"
    points = dict(over_time["points"])
    assert points["2024-03-01T09:00"] == 2
    assert points["2024-03-02T10:00"] == 2
    assert points["2024-03-01T10:00"] == 0
    assert len(points) == 26  # 09:00 on the 1st to 10:00 on the 2nd


def test_more_than_a_quarter_is_counted_per_month(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    store.write_batch("b:later", [pageview(site_id, utc(2024, 9, 10))], [])
    over_time = store.site_stats(site_id, None, None)["pageviews_over_time"]
    assert over_time["unit"] == "month"
    assert over_time["points"] == [
        ["2024-03-01", 6],
        ["2024-04-01", 1],
        ["2024-05-01", 0],
        ["2024-06-01", 0],
        ["2024-07-01", 0],
        ["2024-08-01", 0],
        ["2024-09-01", 1],
    ]


def test_a_site_without_pageviews_has_an_empty_series(store: Store) -> None:
    assert store.site_stats(str(uuid.uuid4()), None, None)["pageviews_over_time"]["points"] == []


def test_the_text_report_draws_the_chart_as_plain_text_when_not_on_a_terminal(
    hitstream_env: dict[str, str], real_redis: redis.Redis
) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["Pageviews", "per", "day"] in lines
    longest = next(line for line in lines if line[:1] == ["2024-03-01"])
    assert longest[-1] == "2" and set(longest[1]) == {"█"}
    assert ["2024-03-03", "0"] in lines  # an empty day: no bar
    half = next(line for line in lines if line[:1] == ["2024-04-01"])
    assert half[-1] == "1" and len(longest[1]) // 2 <= len(half[1]) <= len(longest[1]) // 2 + 1
    assert "\x1b" not in result.output


def test_the_json_document_is_unchanged_by_the_chart(hitstream_env: dict[str, str], real_redis: redis.Redis) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com", "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout).keys() == JSON_KEYS


def test_db_ip_is_credited_in_the_text_report_and_beside_the_json(
    hitstream_env: dict[str, str], real_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    city_db = geo.build_city_db(tmp_path / "dbip.mmdb", database_type="DBIP-City-Lite")
    monkeypatch.setenv("HITSTREAM_GEOIP_CITY_DB", str(city_db))
    text = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com"])
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[-1].startswith("Geo: DBIP-City-Lite built ")
    assert text.output.splitlines()[-1].endswith(f"({DBIP_CREDIT})")
    as_json = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com", "--json"])
    assert orjson.loads(as_json.stdout).keys() == JSON_KEYS
    assert DBIP_CREDIT in as_json.stderr


def test_no_credit_is_printed_without_a_geoip_database(hitstream_env: dict[str, str], real_redis: redis.Redis) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com"])
    assert "Geo:" not in result.output and "DB-IP" not in result.output
