"""Store fixtures (``store_dsn``, ``store``) and row builders for the store and stats tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from workers.records import PAGEVIEW_COLUMNS, EventRow, PageviewRow
from workers.store.migrations import MIGRATIONS
from workers.store.schema import DURABLE_INSERT_SETTINGS, SCHEMA_MIGRATIONS, create_table
from workers.store.store import Store, open_store


@pytest.fixture
def store_dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'chdb'}"


@pytest.fixture
def store(store_dsn: str) -> Iterator[Store]:
    """A migrated store on this test's own chdb path; closed after the test, because a
    process can have one chdb path open at a time."""
    opened = open_store(store_dsn)
    opened.migrate()
    yield opened
    opened.close()


def pageview(site_id: str, timestamp: datetime, **fields: Any) -> PageviewRow:
    return PageviewRow(
        site_id=site_id,
        timestamp=timestamp,
        received_at=fields.pop("received_at", timestamp),
        page_id=fields.pop("page_id", str(uuid.uuid4())),
        session_id=fields.pop("session_id", str(uuid.uuid4())),
        **fields,
    )


def event(site_id: str, timestamp: datetime, name: str, properties: dict[str, str], **fields: Any) -> EventRow:
    row = pageview(site_id, timestamp, **fields)
    return EventRow(**{column: getattr(row, column) for column in PAGEVIEW_COLUMNS}, name=name, properties=properties)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def migrate_as_before_durable_inserts(store: Store) -> None:
    """Bring ``store`` to migration 3 as a hitstream before DURABLE_INSERT_SETTINGS left it:
    the same tables without those settings, migrations 1-3 recorded."""
    earlier = [migration for migration in MIGRATIONS if migration.version <= 3]
    statements = create_table(SCHEMA_MIGRATIONS, None)
    for migration in earlier:
        statements.extend(migration.statements(None))
    for statement in statements:
        assert f", {DURABLE_INSERT_SETTINGS}" in statement
        store._client.command(statement.replace(f", {DURABLE_INSERT_SETTINGS}", ""))
    store._client.insert(
        SCHEMA_MIGRATIONS.name,
        [(migration.version, migration.label, datetime.now(UTC)) for migration in earlier],
        column_names=SCHEMA_MIGRATIONS.column_names,
        settings={"async_insert": 0},
    )


# What fsync_settings answers for a migrated store: every table fsyncs the parts inserts write.
DURABLE_TABLES = {
    "pageviews": ("MergeTree", "1", "1"),
    "events": ("MergeTree", "1", "1"),
    "drop_counts": ("SummingMergeTree", "1", "1"),
    "crawler_hits": ("MergeTree", "1", "1"),
    "schema_migrations": ("MergeTree", "1", "1"),
}


def fsync_settings(store: Store) -> dict[str, tuple[str, str | None, str | None]]:
    """Per table of the store: its engine, and fsync_after_insert and fsync_part_directory as
    SHOW CREATE TABLE states them (None: not set, ClickHouse's default 0)."""
    tables = query(store, "SELECT name, engine FROM system.tables WHERE database = currentDatabase()")
    found = {}
    for name, engine in tables:
        ((create,),) = query(store, f"SHOW CREATE TABLE {name}")
        clause = create.rpartition("\nSETTINGS ")[2] if "\nSETTINGS " in create else ""
        settings = dict(item.split(" = ") for item in clause.split(", ") if " = " in item)
        found[name] = (engine, settings.get("fsync_after_insert"), settings.get("fsync_part_directory"))
    return found


def query(store: Store, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    """Read the store's tables directly (the Store API has no generic query on purpose)."""
    return store._client.query(sql, parameters=parameters).result_rows
