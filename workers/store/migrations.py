"""Numbered schema migrations, applied in order, each once, recorded in ``schema_migrations``.

Append new migrations at the end with the next number; never edit or renumber an applied
one. Every statement must be idempotent (IF NOT EXISTS, ADD COLUMN IF NOT EXISTS, ...): a
migration interrupted half-way is not recorded, so it runs again from its first statement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from workers.store.schema import (
    CRAWLER_HITS,
    DROP_COUNTS,
    EVENTS,
    PAGEVIEWS,
    SCHEMA_MIGRATIONS,
    create_table,
    make_inserts_durable,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str | None], list[str]]  # cluster name (or None) -> DDL

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create_pageviews", lambda cluster: create_table(PAGEVIEWS, cluster)),
    Migration(2, "create_drop_counts", lambda cluster: create_table(DROP_COUNTS, cluster)),
    Migration(3, "create_events", lambda cluster: create_table(EVENTS, cluster)),
    Migration(
        4,
        "fsync_inserted_parts",
        lambda cluster: [
            statement
            for table in (SCHEMA_MIGRATIONS, PAGEVIEWS, DROP_COUNTS, EVENTS)
            for statement in make_inserts_durable(table, cluster)
        ],
    ),
    Migration(5, "create_crawler_hits", lambda cluster: create_table(CRAWLER_HITS, cluster)),
)


def migration_ddl(cluster: str | None) -> list[str]:
    """Every statement ``apply_migrations`` may run, in order (for ``migrate --print``)."""
    statements = create_table(SCHEMA_MIGRATIONS, cluster)
    for migration in MIGRATIONS:
        statements.extend(migration.statements(cluster))
    return statements


def apply_migrations(client: Client, cluster: str | None) -> list[str]:
    """Apply the migrations not yet recorded; return their labels (empty when up to date)."""
    for statement in create_table(SCHEMA_MIGRATIONS, cluster):
        client.command(statement)
    applied = applied_versions(client)
    labels = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements(cluster):
            client.command(statement)
        _record(client, migration)
        labels.append(migration.label)
    return labels


def applied_versions(client: Client) -> set[int]:
    result = client.query(f"SELECT DISTINCT version FROM {SCHEMA_MIGRATIONS.name}")
    return {row[0] for row in result.result_rows}


def _record(client: Client, migration: Migration) -> None:
    # The token makes two processes migrating at once record each version once. An INSERT
    # statement, not clickhouse-connect's insert(): its first row insert imports pandas, 0.3
    # CPU-s of every worker's start on a new store and nothing else in a worker needs it.
    client.command(
        f"INSERT INTO {SCHEMA_MIGRATIONS.name} (version, name, applied_at) VALUES (%(version)s, %(name)s, now64(3))",
        parameters={"version": migration.version, "name": migration.label},
        settings={"insert_deduplication_token": f"migration-{migration.version}", "async_insert": 0},
    )
