"""The store over ClickHouse's HTTP interface (tests/clickhouse_http.py): ``hitstream migrate``
twice, a retried batch deduplicated by its token on the HTTP insert path, refusals passed on
with the server's status, code and text, each outage mode seen by the store's client as the store
unavailable, and ``hitstream stats`` over HTTP after a real API and worker stored pageviews.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator

import clickhouse_connect
import httpx
import orjson
import pytest
import redis
from clickhouse_connect.driver.exceptions import DatabaseError

from shared import keys
from tests.clickhouse_http import OUTAGES, ClickHouseHttp
from tests.procs import HITSTREAM, Processes, wait_until
from tests.stores import DURABLE_TABLES, event, fsync_settings, migrate_as_before_durable_inserts, pageview, utc
from tests.traffic import exact_count, ingest_token, post_pageviews
from workers.records import Drop, DropReason
from workers.store.store import Store, open_store
from workers.store.unavailable import StoreUnavailable

TABLES = {"pageviews", "events", "drop_counts", "crawler_hits", "schema_migrations"}


@pytest.fixture
def http_store(clickhouse_http: ClickHouseHttp) -> Iterator[Store]:
    """A migrated Store talking to the fixture server, as a worker's is."""
    opened = open_store(clickhouse_http.dsn(send_receive_timeout=2))
    opened.migrate()
    yield opened
    opened.close()


def migrate(env: dict[str, str], dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HITSTREAM, "migrate"],
        env={**env, "HITSTREAM_CLICKHOUSE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_over_http_twice_creates_the_schema_once_then_finds_it_up_to_date(
    clickhouse_http: ClickHouseHttp, hitstream_env: dict[str, str]
) -> None:
    first = migrate(hitstream_env, clickhouse_http.dsn())
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [
        "applied",
        "0001_create_pageviews",
        "applied",
        "0002_create_drop_counts",
        "applied",
        "0003_create_events",
        "applied",
        "0004_fsync_inserted_parts",
        "applied",
        "0005_create_crawler_hits",
    ]
    second = migrate(hitstream_env, clickhouse_http.dsn())
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema is up to date"

    tables = {row[0] for row in clickhouse_http.query("SHOW TABLES")}
    assert tables == TABLES
    assert clickhouse_http.query("SELECT version FROM schema_migrations ORDER BY version") == [
        (1,),
        (2,),
        (3,),
        (4,),
        (5,),
    ]
    opened = open_store(clickhouse_http.dsn())
    try:
        assert fsync_settings(opened) == DURABLE_TABLES
    finally:
        opened.close()


def test_migrate_over_http_gives_tables_made_before_the_fsync_settings_those_settings(
    clickhouse_http: ClickHouseHttp,
) -> None:
    opened = open_store(clickhouse_http.dsn())
    try:
        migrate_as_before_durable_inserts(opened)
        assert opened.migrate() == ["0004_fsync_inserted_parts", "0005_create_crawler_hits"]
        assert fsync_settings(opened) == DURABLE_TABLES
    finally:
        opened.close()


def _mixed_batch() -> tuple[list, list[Drop]]:
    """Pageviews and events in two months (two partitions), and drops in two minutes."""
    site = str(uuid.uuid4())
    rows = [pageview(site, utc(2026, 1, 31, 23, 59, second)) for second in range(0, 50, 10)]
    rows += [pageview(site, utc(2026, 2, 1, 0, 0, second)) for second in range(0, 30, 10)]
    rows += [event(site, utc(2026, 2, 1, 0, 1), "signup", {"plan": "pro"}) for _ in range(4)]
    drops = [Drop(site, DropReason.SPAM_REFERRER, utc(2026, 2, 1, 0, minute, 5)) for minute in (1, 1, 2)]
    return rows, drops


def _stored(server: ClickHouseHttp) -> tuple[int, int, int]:
    return (
        server.query("SELECT count() FROM pageviews")[0][0],
        server.query("SELECT count() FROM events")[0][0],
        server.query("SELECT sum(count) FROM drop_counts")[0][0],
    )


def test_a_batch_written_twice_under_its_id_is_stored_once_over_http(
    clickhouse_http: ClickHouseHttp, http_store: Store
) -> None:
    rows, drops = _mixed_batch()
    http_store.write_batch("b:http-retried", rows, drops)
    http_store.write_batch("b:http-retried", rows, drops)
    assert _stored(clickhouse_http) == (8, 4, 3)

    # The same rows under another batch id are a new batch: deduplication is by the token.
    http_store.write_batch("b:http-other", rows, drops)
    assert _stored(clickhouse_http) == (16, 8, 6)


def test_a_retried_batch_whose_rows_changed_is_still_stored_once_over_http(
    clickhouse_http: ClickHouseHttp, http_store: Store
) -> None:
    # Between two attempts an exclusion rule may appear: the retry then drops a pageview the
    # first attempt stored. Its blocks differ, so only the token (not ClickHouse's hash of an
    # identical block) can recognise them as the same batch. (The drop stays in the month of
    # the first attempt's drops: blocks are matched per partition, in partition order.)
    rows, drops = _mixed_batch()
    http_store.write_batch("b:http-changed", rows, drops)
    excluded = rows[7]  # a pageview of February, like the drops
    retried = [row for row in rows if row is not excluded]
    http_store.write_batch(
        "b:http-changed", retried, [*drops, Drop(excluded.site_id, DropReason.SITE_PATH, excluded.timestamp)]
    )
    assert _stored(clickhouse_http) == (8, 4, 3)


# (statement, URL settings, HTTP status, ClickHouse error code): the server's own mapping.
REFUSALS = [
    pytest.param("SELECT * FROM no_such_table", {}, 404, 60, id="unknown table"),
    pytest.param("SELEC 1", {}, 400, 62, id="syntax error"),
    pytest.param("SELECT 1", {"no_such_setting": "1"}, 404, 115, id="unknown setting"),
    pytest.param("SELECT toUUID('not a uuid')", {}, 400, 376, id="cannot parse UUID"),
    pytest.param("SELECT throwIf(1, 'refused')", {}, 500, 395, id="unmapped code"),
]


@pytest.mark.parametrize(("statement", "settings", "status", "code"), REFUSALS)
def test_a_refused_statement_is_answered_with_the_servers_status_code_and_text(
    clickhouse_http: ClickHouseHttp, statement: str, settings: dict[str, str], status: int, code: int
) -> None:
    answer = httpx.post(clickhouse_http.url, params=settings, content=statement, timeout=30)
    assert answer.status_code == status
    assert answer.headers["X-ClickHouse-Exception-Code"] == str(code)
    assert answer.text.startswith(f"Code: {code}. DB::Exception: ")

    client = clickhouse_connect.get_client(dsn=clickhouse_http.dsn(), autogenerate_session_id=False)
    try:
        with pytest.raises(DatabaseError) as raised:
            client.query(statement, settings=settings)
    finally:
        client.close()
    assert raised.value.code == code


def test_an_insert_into_a_missing_table_is_refused_with_its_code(clickhouse_http: ClickHouseHttp) -> None:
    client = clickhouse_connect.get_client(dsn=clickhouse_http.dsn(), autogenerate_session_id=False)
    try:
        with pytest.raises(DatabaseError) as raised:
            client.insert("no_such_table", [(1,)], column_names=["x"], column_type_names=["UInt8"])
    finally:
        client.close()
    assert raised.value.code == 60


@pytest.mark.parametrize("mode", OUTAGES)
def test_a_write_during_an_outage_raises_store_unavailable_and_its_retry_is_stored_once(
    clickhouse_http: ClickHouseHttp, http_store: Store, mode: str
) -> None:
    rows, drops = _mixed_batch()
    clickhouse_http.begin_outage(mode)
    with pytest.raises(StoreUnavailable):
        http_store.write_batch("b:outage", rows, drops)
    clickhouse_http.end_outage(mode)
    http_store.write_batch("b:outage", rows, drops)
    assert _stored(clickhouse_http) == (8, 4, 3)


def test_stats_over_http_report_what_a_real_worker_stored(
    clickhouse_http: ClickHouseHttp, processes: Processes, real_redis: redis.Redis
) -> None:
    secret = ingest_token(real_redis)
    api = processes.api()
    worker = processes.worker(clickhouse_http.dsn())
    worker.wait_ready(real_redis)
    answers = asyncio.run(post_pageviews(api.url, secret, 300, concurrency=10))
    wait_until(lambda: real_redis.xlen(keys.STREAM) == 0, 60, "the worker to store the pageviews", interval=0.1)
    assert worker.stop() == 0

    figures = exact_count("stats over http", answers, clickhouse_http.stored_pages())
    assert (figures.accepted, figures.stored, figures.duplicated, figures.lost) == (300, 300, 0, 0)
    shown = subprocess.run(
        [HITSTREAM, "stats", "--site", "example.com", "--json"],
        env={**processes.env, "HITSTREAM_CLICKHOUSE_URL": clickhouse_http.dsn()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    report = orjson.loads(shown.stdout)
    assert report["site"] == "example.com"
    assert report["pageviews"] == 300
    assert report["browsers"] == [{"value": "Firefox", "pageviews": 300}]
    assert len(report["pages"]) == 10 and report["drops"] == {}
