"""Schema and migrations: applied once, recorded, the table layout the issue asks for, and the
replicated variant's DDL for ``migrate --cluster``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hitstream.main import cli
from tests.stores import DURABLE_TABLES, fsync_settings, migrate_as_before_durable_inserts, query
from workers.records import CRAWLER_HIT_COLUMNS, EVENT_COLUMNS, PAGEVIEW_COLUMNS
from workers.store.migrations import MIGRATIONS, migration_ddl
from workers.store.store import Store, open_store

LONG_TEXT_COLUMNS = {"path", "query", "referrer", "user_agent"}
DIMENSIONS = {
    "hostname",
    "referrer_host",
    "country",
    "region_code",
    "region_name",
    "city",
    "provider",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device_type",
    "language",
}
UTM_COLUMNS = {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"}


def test_migrate_applies_each_migration_once_and_records_it(store_dsn: str) -> None:
    opened = open_store(store_dsn)
    try:
        assert opened.migrate() == [
            "0001_create_pageviews",
            "0002_create_drop_counts",
            "0003_create_events",
            "0004_fsync_inserted_parts",
            "0005_create_crawler_hits",
        ]
        assert opened.migrate() == []
        recorded = query(opened, "SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        opened.close()
    assert recorded == [(m.version, m.label) for m in MIGRATIONS]


def test_pageviews_table_layout(store: Store) -> None:
    ((engine, partition_key, sorting_key, create),) = query(
        store,
        "SELECT engine, partition_key, sorting_key, create_table_query FROM system.tables"
        " WHERE database = currentDatabase() AND name = 'pageviews'",
    )
    assert engine == "MergeTree"
    assert partition_key == "toYYYYMM(timestamp)"
    assert sorting_key == "site_id, timestamp"
    assert "non_replicated_deduplication_window = 10000" in create

    columns = query(
        store,
        "SELECT name, type, compression_codec FROM system.columns"
        " WHERE database = currentDatabase() AND table = 'pageviews' ORDER BY position",
    )
    names = [name for name, _, _ in columns]
    assert tuple(names) == PAGEVIEW_COLUMNS
    assert not [name for name in names if "ip" in name.split("_")], "no IP column may exist"
    types = {name: column_type for name, column_type, _ in columns}
    codecs = {name: codec for name, _, codec in columns}
    assert {name for name in DIMENSIONS if types[name] == "LowCardinality(String)"} == DIMENSIONS
    assert {name for name in UTM_COLUMNS if types[name] == "LowCardinality(Nullable(String))"} == UTM_COLUMNS
    assert types["timestamp"] == "DateTime64(3, 'UTC')"
    assert (types["site_id"], types["page_id"], types["session_id"], types["qr_id"]) == (
        "UUID",
        "UUID",
        "UUID",
        "Nullable(UUID)",
    )
    assert {name for name, codec in codecs.items() if codec} == LONG_TEXT_COLUMNS
    assert {codecs[name] for name in LONG_TEXT_COLUMNS} == {"CODEC(ZSTD(3))"}


def test_events_table_is_laid_out_like_pageviews_plus_name_and_properties(store: Store) -> None:
    tables = query(
        store,
        "SELECT name, engine, partition_key, sorting_key, create_table_query FROM system.tables"
        " WHERE database = currentDatabase() AND name IN ('pageviews', 'events') ORDER BY name = 'events'",
    )
    (_, *pageviews_layout, _), (_, *events_layout, events_create) = tables
    assert events_layout == pageviews_layout == ["MergeTree", "toYYYYMM(timestamp)", "site_id, timestamp"]
    assert "non_replicated_deduplication_window = 10000" in events_create

    def columns(table: str) -> list[tuple[str, str, str]]:
        return query(
            store,
            "SELECT name, type, compression_codec FROM system.columns"
            " WHERE database = currentDatabase() AND table = {table:String} ORDER BY position",
            table=table,
        )

    events = columns("events")
    assert tuple(name for name, _, _ in events) == EVENT_COLUMNS
    assert events == columns("pageviews") + [
        ("name", "LowCardinality(String)", ""),
        ("properties", "Map(String, String)", ""),
    ]
    assert not [name for name, _, _ in events if "ip" in name.split("_")], "no IP column may exist"


def test_crawler_hits_table_is_sorted_like_pageviews_and_holds_no_address(store: Store) -> None:
    ((engine, partition_key, sorting_key),) = query(
        store,
        "SELECT engine, partition_key, sorting_key FROM system.tables"
        " WHERE database = currentDatabase() AND name = 'crawler_hits'",
    )
    assert (engine, partition_key, sorting_key) == ("MergeTree", "toYYYYMM(timestamp)", "site_id, timestamp")
    columns = query(
        store,
        "SELECT name, type FROM system.columns WHERE database = currentDatabase()"
        " AND table = 'crawler_hits' ORDER BY position",
    )
    assert tuple(name for name, _ in columns) == CRAWLER_HIT_COLUMNS
    types = dict(columns)
    assert (types["status_code"], types["bytes_served"], types["ai"]) == ("UInt16", "UInt64", "Bool")
    assert {types[name] for name in ("crawler", "operator", "purpose", "verdict")} == {"LowCardinality(String)"}
    assert not [name for name, _ in columns if "ip" in name.split("_")], "no IP column may exist"


def test_drop_counts_table_layout(store: Store) -> None:
    ((engine, engine_full, sorting_key),) = query(
        store,
        "SELECT engine, engine_full, sorting_key FROM system.tables"
        " WHERE database = currentDatabase() AND name = 'drop_counts'",
    )
    assert engine == "SummingMergeTree"
    assert engine_full.startswith("SummingMergeTree(count)")
    assert sorting_key == "site_id, minute, reason"
    columns = query(
        store,
        "SELECT name, type FROM system.columns WHERE database = currentDatabase()"
        " AND table = 'drop_counts' ORDER BY position",
    )
    assert columns == [
        ("site_id", "UUID"),
        ("reason", "LowCardinality(String)"),
        ("minute", "DateTime('UTC')"),
        ("count", "UInt64"),
    ]


def test_cluster_ddl_is_replicated_and_distributed() -> None:
    ddl = "\n".join(migration_ddl("analytics"))
    assert "CREATE TABLE IF NOT EXISTS pageviews_local ON CLUSTER `analytics`" in ddl
    assert ("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/pageviews_local', '{replica}')") in ddl
    assert (
        "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/drop_counts_local',"
        " '{replica}', count)"
    ) in ddl
    assert (
        "CREATE TABLE IF NOT EXISTS pageviews ON CLUSTER `analytics` AS pageviews_local\n"
        "ENGINE = Distributed('analytics', currentDatabase(), pageviews_local, cityHash64(site_id))"
    ) in ddl
    assert (
        "CREATE TABLE IF NOT EXISTS drop_counts ON CLUSTER `analytics` AS drop_counts_local\n"
        "ENGINE = Distributed('analytics', currentDatabase(), drop_counts_local, cityHash64(site_id))"
    ) in ddl
    (events_local,) = [s for s in migration_ddl("analytics") if "TABLE IF NOT EXISTS events_local" in s]
    assert "    name LowCardinality(String),\n    properties Map(String, String)\n)" in events_local
    assert (
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/events_local',"
        " '{replica}')\nPARTITION BY toYYYYMM(timestamp)\nORDER BY (site_id, timestamp)"
    ) in events_local
    assert (
        "CREATE TABLE IF NOT EXISTS events ON CLUSTER `analytics` AS events_local\n"
        "ENGINE = Distributed('analytics', currentDatabase(), events_local, cityHash64(site_id))"
    ) in ddl
    assert "replicated_deduplication_window = 10000" in ddl
    # The migrations table is replicated to every node, not sharded.
    assert "ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations', '{shard}-{replica}')" in ddl
    assert "Distributed('analytics', currentDatabase(), schema_migrations" not in ddl
    assert "MergeTree\n" not in ddl and "ENGINE = MergeTree" not in ddl


@pytest.mark.parametrize("cluster", [None, "analytics"])
def test_every_generated_statement_is_valid_clickhouse_sql(store: Store, cluster: str | None) -> None:
    for statement in migration_ddl(cluster):
        ((formatted,),) = query(store, "SELECT formatQuery({statement:String})", statement=statement)
        assert formatted.startswith(("CREATE TABLE IF NOT EXISTS", "ALTER TABLE"))


def test_migrate_print_shows_ddl_and_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "never-created"
    monkeypatch.setenv("HITSTREAM_CLICKHOUSE_URL", f"chdb://{path}")
    result = CliRunner().invoke(cli, ["migrate", "--cluster", "analytics", "--print"])
    assert result.exit_code == 0, result.output
    statements = migration_ddl("analytics")
    assert result.output.count("CREATE TABLE IF NOT EXISTS") + result.output.count("ALTER TABLE") == len(statements)
    assert "ON CLUSTER `analytics`" in result.output
    assert not path.exists()


def test_migrate_command_applies_then_reports_up_to_date(store_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITSTREAM_CLICKHOUSE_URL", store_dsn)
    first = CliRunner().invoke(cli, ["migrate"])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        "applied 0001_create_pageviews",
        "applied 0002_create_drop_counts",
        "applied 0003_create_events",
        "applied 0004_fsync_inserted_parts",
        "applied 0005_create_crawler_hits",
    ]
    second = CliRunner().invoke(cli, ["migrate"])
    assert second.output.strip() == "schema is up to date"


def test_migrate_rejects_a_bad_cluster_name() -> None:
    result = CliRunner().invoke(cli, ["migrate", "--cluster", "x'; DROP", "--print"])
    assert result.exit_code == 2
    assert "--cluster" in result.output


def test_every_table_of_a_new_store_fsyncs_the_parts_an_insert_writes(store: Store) -> None:
    assert fsync_settings(store) == DURABLE_TABLES


def test_a_store_made_before_the_fsync_settings_gets_them_from_the_next_migrate(store_dsn: str) -> None:
    opened = open_store(store_dsn)
    try:
        migrate_as_before_durable_inserts(opened)
        assert set(fsync_settings(opened).values()) == {
            ("MergeTree", None, None),
            ("SummingMergeTree", None, None),
        }
        assert opened.migrate() == ["0004_fsync_inserted_parts", "0005_create_crawler_hits"]
        assert fsync_settings(opened) == DURABLE_TABLES
        assert opened.migrate() == []
    finally:
        opened.close()


def test_cluster_ddl_gives_every_replicated_table_the_fsync_settings() -> None:
    statements = migration_ddl("analytics")
    creates = [statement for statement in statements if "MergeTree(" in statement]
    assert len(creates) == 5
    assert all(
        statement.endswith(
            "SETTINGS replicated_deduplication_window = 10000, fsync_after_insert = 1, fsync_part_directory = 1"
        )
        for statement in creates
    )
    settings = "MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1"
    assert [statement for statement in statements if statement.startswith("ALTER")] == [
        f"ALTER TABLE schema_migrations ON CLUSTER `analytics` {settings}",
        f"ALTER TABLE pageviews_local ON CLUSTER `analytics` {settings}",
        f"ALTER TABLE drop_counts_local ON CLUSTER `analytics` {settings}",
        f"ALTER TABLE events_local ON CLUSTER `analytics` {settings}",
    ]
