"""The store's tables, and their DDL for one ClickHouse server or for a cluster.

One server (chdb or http): plain ``MergeTree`` tables. A cluster (``--cluster NAME``): each
sharded table becomes ``<name>_local``, a ``Replicated*MergeTree`` created ``ON CLUSTER``, plus
a ``Distributed`` table under the plain name, so readers and the writer use the same names in
both layouts. Small bookkeeping tables (no sharding key) are replicated to every node instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Retried batches are recognised by their insert_deduplication_token among the last this many
# insert blocks per table. A batch is re-claimed after its lease expires (about a minute), and
# at 10k events/s in 1000-row batches that is ~600 blocks later, so 10,000 leaves a wide margin.
# A batch spread over k months inserts k blocks (one per partition): see docs/reliability.md
# for a historical replay's rate.
DEDUPLICATION_WINDOW = 10_000

# Every MergeTree table fsyncs the files of each part an insert writes, and the part's
# directory, before the insert answers: the worker acknowledges a batch in Redis (XACK + XDEL,
# the queue forgets it) right after, so a part left in the page cache was lost with the batch
# by a power cut (3,000 of 3,000 stored pageviews, every run). ClickHouse has both off by
# default. Tables made before these settings get them from migration 4. Cost: +16-21 ms per
# batch of 1,000 pageviews and a few drops (two parts; bench/store_bench.py --fsync, two runs
# on the shared 2-core VM, 50.8 -> 67.0 and 78.9 -> 100.4 ms); docs/reliability.md, "A power
# cut after the acknowledgement", has the worker's figures.
DURABLE_INSERT_SETTINGS = "fsync_after_insert = 1, fsync_part_directory = 1"

CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    codec: str | None = None

    def ddl(self) -> str:
        codec = f" CODEC({self.codec})" if self.codec else ""
        return f"{self.name} {self.type}{codec}"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    engine: str  # a MergeTree family member without its "Replicated" prefix
    engine_args: tuple[str, ...]
    order_by: str
    partition_by: str | None = None
    # Rows are spread over shards by this expression; None: a copy on every node.
    sharding_key: str | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def column_types(self) -> tuple[str, ...]:
        return tuple(column.type for column in self.columns)


def check_cluster_name(cluster: str) -> str:
    if not CLUSTER_NAME.match(cluster):
        raise ValueError(f"cluster name {cluster!r} must be letters, digits, '_', '-' or '.'")
    return cluster


def create_table(table: Table, cluster: str | None) -> list[str]:
    """The statements that create ``table`` (idempotent: IF NOT EXISTS)."""
    if cluster is None:
        return [_create_storage(table.name, table, "", _engine(table, replication=None))]
    check_cluster_name(cluster)
    on_cluster = f" ON CLUSTER `{cluster}`"
    if table.sharding_key is None:
        # One replica set spanning the whole cluster; {shard}-{replica} is unique cluster-wide.
        path = f"/clickhouse/tables/{{database}}/{table.name}"
        engine = _engine(table, replication=(path, "{shard}-{replica}"))
        return [_create_storage(table.name, table, on_cluster, engine)]
    local = f"{table.name}_local"
    path = f"/clickhouse/tables/{{shard}}/{{database}}/{local}"
    distributed = (
        f"CREATE TABLE IF NOT EXISTS {table.name}{on_cluster} AS {local}\n"
        f"ENGINE = Distributed('{cluster}', currentDatabase(), {local}, {table.sharding_key})"
    )
    engine = _engine(table, replication=(path, "{replica}"))
    return [_create_storage(local, table, on_cluster, engine), distributed]


def make_inserts_durable(table: Table, cluster: str | None) -> list[str]:
    """The statement that gives a table created before DURABLE_INSERT_SETTINGS those settings
    (on a cluster: its replicated storage table on every node; idempotent)."""
    if cluster is None:
        return [f"ALTER TABLE {table.name} MODIFY SETTING {DURABLE_INSERT_SETTINGS}"]
    check_cluster_name(cluster)
    storage = table.name if table.sharding_key is None else f"{table.name}_local"
    return [f"ALTER TABLE {storage} ON CLUSTER `{cluster}` MODIFY SETTING {DURABLE_INSERT_SETTINGS}"]


def _engine(table: Table, replication: tuple[str, str] | None) -> str:
    """The ENGINE clause; ``replication`` is (keeper path, replica name) for a cluster."""
    if replication is None:
        args = table.engine_args
        engine = table.engine
        window = f"non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
    else:
        path, replica = replication
        args = (f"'{path}'", f"'{replica}'", *table.engine_args)
        engine = f"Replicated{table.engine}"
        window = f"replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
    call = f"{engine}({', '.join(args)})" if args else engine
    lines = [f"ENGINE = {call}"]
    if table.partition_by:
        lines.append(f"PARTITION BY {table.partition_by}")
    lines.append(f"ORDER BY {table.order_by}")
    lines.append(f"SETTINGS {window}, {DURABLE_INSERT_SETTINGS}")
    return "\n".join(lines)


def _create_storage(name: str, table: Table, on_cluster: str, engine: str) -> str:
    columns = ",\n".join(f"    {column.ddl()}" for column in table.columns)
    return f"CREATE TABLE IF NOT EXISTS {name}{on_cluster}\n(\n{columns}\n)\n{engine}"


_DIMENSION = "LowCardinality(String)"
_OPTIONAL_DIMENSION = "LowCardinality(Nullable(String))"
_TIME = "DateTime64(3, 'UTC')"
_LONG_TEXT_CODEC = "ZSTD(3)"

# Column order = workers.records.PageviewRow field order (checked by a test). No IP column.
PAGEVIEWS = Table(
    name="pageviews",
    columns=(
        Column("site_id", "UUID"),
        Column("timestamp", _TIME),
        Column("received_at", _TIME),
        Column("page_id", "UUID"),
        Column("session_id", "UUID"),
        Column("hostname", _DIMENSION),
        Column("path", "String", _LONG_TEXT_CODEC),
        Column("query", "String", _LONG_TEXT_CODEC),
        Column("referrer", "String", _LONG_TEXT_CODEC),
        Column("referrer_host", _DIMENSION),
        Column("utm_source", _OPTIONAL_DIMENSION),
        Column("utm_medium", _OPTIONAL_DIMENSION),
        Column("utm_campaign", _OPTIONAL_DIMENSION),
        Column("utm_term", _OPTIONAL_DIMENSION),
        Column("utm_content", _OPTIONAL_DIMENSION),
        Column("qr_id", "Nullable(UUID)"),
        Column("country", _DIMENSION),
        Column("region_code", _DIMENSION),
        Column("region_name", _DIMENSION),
        Column("city", _DIMENSION),
        Column("asn", "UInt32"),
        Column("provider", _DIMENSION),
        Column("user_agent", "String", _LONG_TEXT_CODEC),
        Column("browser", _DIMENSION),
        Column("browser_version", _DIMENSION),
        Column("os", _DIMENSION),
        Column("os_version", _DIMENSION),
        Column("device_type", _DIMENSION),
        Column("is_bot", "Bool"),
        Column("language", _DIMENSION),
        Column("screen_width", "UInt32"),
        Column("screen_height", "UInt32"),
        Column("viewport_width", "UInt32"),
        Column("viewport_height", "UInt32"),
    ),
    engine="MergeTree",
    engine_args=(),
    partition_by="toYYYYMM(timestamp)",
    # Every report reads one site over a time range: the primary key makes that a range scan.
    order_by="(site_id, timestamp)",
    sharding_key="cityHash64(site_id)",
)

# Custom events (POST /api/ingest/server/event): a pageview's columns plus the event name and
# its flat properties; column order = workers.records.EventRow field order. No IP column.
EVENTS = Table(
    name="events",
    columns=(
        *PAGEVIEWS.columns,
        Column("name", _DIMENSION),
        Column("properties", "Map(String, String)"),
    ),
    engine=PAGEVIEWS.engine,
    engine_args=PAGEVIEWS.engine_args,
    partition_by=PAGEVIEWS.partition_by,
    order_by=PAGEVIEWS.order_by,
    sharding_key=PAGEVIEWS.sharding_key,
)

# Pageviews the pipeline dropped, counted per site, reason and minute. Merges add up `count`
# for equal keys, so readers must always sum(count).
DROP_COUNTS = Table(
    name="drop_counts",
    columns=(
        Column("site_id", "UUID"),
        Column("reason", _DIMENSION),
        Column("minute", "DateTime('UTC')"),
        Column("count", "UInt64"),
    ),
    engine="SummingMergeTree",
    engine_args=("count",),
    partition_by="toYYYYMM(minute)",
    order_by="(site_id, minute, reason)",
    sharding_key="cityHash64(site_id)",
)

# One row per request of a known crawler (workers.records.CrawlerHitRow, same column order):
# from pageviews and events whose user agent names one, and from the AI-fetch endpoint. No IP
# column: the verification verdict is all that is kept of the address.
CRAWLER_HITS = Table(
    name="crawler_hits",
    columns=(
        Column("site_id", "UUID"),
        Column("timestamp", _TIME),
        Column("received_at", _TIME),
        Column("hit_id", "UUID"),
        Column("source", _DIMENSION),
        Column("crawler", _DIMENSION),
        Column("operator", _DIMENSION),
        Column("purpose", _DIMENSION),
        Column("ai", "Bool"),
        Column("verdict", _DIMENSION),
        Column("hostname", _DIMENSION),
        Column("path", "String", _LONG_TEXT_CODEC),
        Column("query", "String", _LONG_TEXT_CODEC),
        Column("status_code", "UInt16"),
        Column("resource_type", _DIMENSION),
        Column("content_type", _DIMENSION),
        Column("response_ms", "UInt32"),
        Column("bytes_served", "UInt64"),
        Column("country", _DIMENSION),
        Column("asn", "UInt32"),
        Column("provider", _DIMENSION),
        Column("user_agent", "String", _LONG_TEXT_CODEC),
    ),
    engine=PAGEVIEWS.engine,
    engine_args=PAGEVIEWS.engine_args,
    partition_by=PAGEVIEWS.partition_by,
    order_by=PAGEVIEWS.order_by,
    sharding_key=PAGEVIEWS.sharding_key,
)

SCHEMA_MIGRATIONS = Table(
    name="schema_migrations",
    columns=(
        Column("version", "UInt32"),
        Column("name", "String"),
        Column("applied_at", _TIME),
    ),
    engine="MergeTree",
    engine_args=(),
    order_by="version",
)
