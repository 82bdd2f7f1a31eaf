"""The ClickHouse store: open it from a DSN, migrate it, write batches, read site stats.

The same code serves the embedded engine (``chdb://PATH``) and a ClickHouse server
(``http(s)://HOST:8123``); only the DSN differs. A write failure is one of two kinds:
- the store is down or slow (no connection, a timeout, too many parts, an unknown error):
  ``StoreUnavailable``, which the batch job answers by retrying the whole batch;
- the store refuses the data (a closed set of ClickHouse error codes for values it cannot
  parse, convert or accept, or a value the Arrow conversion cannot hold): the insert is split
  in halves until the refused rows are alone, and ``write_batch`` returns them with the
  store's error for the batch job to dead-letter, while every other row is stored.

``write_batch`` returns once what it stored is durable: each part fsynced by ClickHouse (the
tables' DURABLE_INSERT_SETTINGS, workers.store.schema) and, in an embedded store, the
deduplication logs by the writer (workers.store.deduplication_logs). Only then may the
caller acknowledge the batch in Redis, which forgets it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from shared.urls import redacted
from workers.records import Drop, StoredRow
from workers.store.blocks import Block, PreparedBatch, prepare_batch
from workers.store.crawler_stats import query_crawler_stats
from workers.store.deduplication_logs import DeduplicationLogs, forget_unwritten_blocks
from workers.store.dsn import chdb_path, chdb_path_in_use, in_use_message
from workers.store.migrations import apply_migrations
from workers.store.schema import CRAWLER_HITS, DROP_COUNTS, EVENTS, PAGEVIEWS
from workers.store.stats import query_site_stats
from workers.store.unavailable import StoreUnavailable

log = logging.getLogger(__name__)

# Every insert of a batch carries a token derived from the batch id as
# insert_deduplication_token: ClickHouse drops a block whose token it saw recently in that
# table and partition, so a retried batch is stored once. A batch's rows are inserted one
# block per partition (month), so no insert is refused for spanning too many partitions;
# each block carries the plain batch id, which is enough because ClickHouse tracks a token
# per partition (documented for insert_deduplication_token; tests/test_store_inserts.py checks
# it), and which keeps a batch an older writer stored as one multi-month block deduplicated
# across an upgrade. A refused block is halved, each half under "<token>/0" and "<token>/1".
# async_insert is off because chdb defaults it on, and buffered inserts deduplicate by other
# rules; distributed_foreground_insert makes a Distributed table (cluster layout) answer only
# after the shards stored the rows.
_INSERT_SETTINGS = {"async_insert": 0, "insert_deduplicate": 1, "distributed_foreground_insert": 1}

# ClickHouse error codes that mean "this data is refused": the same rows are refused on every
# attempt, so retrying cannot help. Anything else (unknown codes included) is an outage and
# retried: a split is safe only when the refused block can never be stored later under its
# own token. TOO_MANY_PARTS (252) is not here: one block holds one partition, so it can only
# mean that merges lag behind inserts (parts_to_throw_insert), which passes.
REFUSAL_CODES: frozenset[int] = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        376,  # CANNOT_PARSE_UUID
        469,  # VIOLATED_CONSTRAINT
    }
)


class _Refused(Exception):
    """The store refused one insert's rows (see REFUSAL_CODES); nothing of it was written."""


@dataclass(frozen=True, slots=True)
class Refusals:
    """What the store refused of a batch, each with the store's error: positions in the
    batch's ``rows`` and in its ``drops`` (every drop counted in a refused drop-count row)."""

    rows: dict[int, str] = field(default_factory=dict)
    drops: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows or self.drops)


class Store:
    def __init__(self, client: Client, dsn: str) -> None:
        self._client = client
        self.dsn = redacted(dsn)
        # An embedded store's deduplication logs are files of this process to fsync.
        self._deduplication_logs = DeduplicationLogs(self._data_paths) if chdb_path(dsn) is not None else None

    def migrate(self, cluster: str | None = None) -> list[str]:
        """Apply pending numbered migrations; return the labels applied (empty: up to date)."""
        try:
            return apply_migrations(self._client, cluster)
        except ClickHouseError as error:
            raise StoreUnavailable(f"migrating the store at {self.dsn} failed: {error}") from error

    def write_batch(self, batch_id: str, rows: Sequence[StoredRow], drops: Sequence[Drop]) -> Refusals:
        """Insert a batch's pageviews, events (``EventRow``), crawler hits and drop counts, one insert per
        table and month, each at most once per ``batch_id``; return what the store refused.
        Raises StoreUnavailable (then retry the whole batch: what was stored is deduplicated)."""
        return self.write_prepared(prepare_batch(batch_id, rows, drops))

    def write_prepared(self, prepared: PreparedBatch) -> Refusals:
        """``write_batch`` for a batch whose blocks were built already (maybe in another process)."""
        refused_rows = dict(prepared.refused_rows)
        refused_counts = dict(prepared.refused_counts)
        try:
            for block in prepared.blocks:
                # By name: a block that crossed processes holds a copy of its table.
                counted = block.table.name == DROP_COUNTS.name
                self._insert_or_halve(block, refused_counts if counted else refused_rows)
        except (ClickHouseError, OSError) as error:
            raise StoreUnavailable(f"batch {prepared.batch_id} was not stored in {self.dsn}: {error}") from error
        refusals = Refusals(rows=refused_rows)
        for index, message in refused_counts.items():
            refusals.drops.update(dict.fromkeys(prepared.counted[index], message))
        return refusals

    def _insert_or_halve(self, block: Block, refused: dict[int, str]) -> None:
        """Insert ``block``; when the store refuses it, each half under its own token derived
        from the block's, until a refused row is alone (its position goes to ``refused``)."""
        try:
            self._insert(block)
        except _Refused as error:
            if block.data.num_rows == 1:
                refused[block.positions[0]] = str(error)
                return
            middle = block.data.num_rows // 2
            halves = ((0, block.positions[:middle]), (middle, block.positions[middle:]))
            for half, (start, positions) in enumerate(halves):
                data = block.data.slice(start, len(positions))
                self._insert_or_halve(Block(f"{block.token}/{half}", block.table, data, positions), refused)

    def _insert(self, block: Block) -> None:
        settings = {**_INSERT_SETTINGS, "insert_deduplication_token": block.token}
        try:
            self._client.insert_arrow(block.table.name, block.data, settings=settings)
        except DatabaseError as error:
            if error.code in REFUSAL_CODES:
                raise _Refused(str(error)) from error
            raise
        if self._deduplication_logs is not None:
            self._deduplication_logs.sync(block.table.name)

    def detach_unrecorded_parts(self) -> list[str]:
        """In an embedded store, detach every part an insert left without its deduplication
        record (a power cut between ClickHouse's rename of the part and the writer's fsync of
        the log): its batch was not acknowledged, so it comes back and, without this, would be
        stored a second time. Returns the parts detached, as "table/part"."""
        if self._deduplication_logs is None:
            return []
        detached = []
        for table in (PAGEVIEWS, EVENTS, DROP_COUNTS, CRAWLER_HITS):
            newest = self._deduplication_logs.last_recorded_block(table.name)
            if newest is None:
                continue
            result = self._client.query(
                "SELECT name FROM system.parts WHERE database = currentDatabase() AND table = {table:String}"
                " AND active AND min_block_number > {newest:UInt64} ORDER BY name",
                parameters={"table": table.name, "newest": newest},
            )
            for (part,) in result.result_rows:
                self._client.command(f"ALTER TABLE {table.name} DETACH PART '{part}'")
                detached.append(f"{table.name}/{part}")
        return detached

    def _data_paths(self, table: str) -> list[Path]:
        result = self._client.query(
            "SELECT data_paths FROM system.tables WHERE database = currentDatabase() AND name = {table:String}",
            parameters={"table": table},
        )
        return [Path(path) for (paths,) in result.result_rows for path in paths]

    def site_stats(
        self, site_id: str, date_from: date | None, date_to: date | None, limit: int = 10, all_traffic: bool = False
    ) -> dict[str, Any]:
        """Totals and top lists for one site between two dates (inclusive, UTC), humans only
        unless ``all_traffic``, and the crawler section (key "crawlers")."""
        try:
            report = query_site_stats(self._client, site_id, date_from, date_to, limit, all_traffic)
            report["crawlers"] = query_crawler_stats(self._client, site_id, date_from, date_to, limit)
            return report
        except ClickHouseError as error:
            raise StoreUnavailable(f"reading stats from {self.dsn} failed: {error}") from error

    def close(self) -> None:
        self._client.close()


def open_store(dsn: str) -> Store:
    """Connect to the store named by ``dsn``; raise StoreUnavailable if it cannot be opened."""
    path = chdb_path(dsn)
    if path is not None and chdb_path_in_use(path):
        raise StoreUnavailable(in_use_message(path))
    # The engine deletes its status file when it shuts down cleanly: one left behind means
    # the last process was killed or lost power, maybe in the middle of an insert.
    interrupted = path is not None and (path / "status").exists()
    try:
        if path is not None and interrupted:
            forgotten = forget_unwritten_blocks(path)  # before the engine reads the logs
            if forgotten:
                log.warning(
                    "forgot the deduplication records of %s: their inserts were interrupted before the parts were"
                    " in place; their batches come back and are stored",
                    ", ".join(forgotten),
                )
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        else:
            # No session id: the worker's batch writes and stats jobs may share one client.
            client = clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)
    except (ClickHouseError, OSError) as error:
        raise StoreUnavailable(f"cannot open the store at {redacted(dsn)}: {error}") from error
    store = Store(client, dsn)
    if interrupted:
        try:
            detached = store.detach_unrecorded_parts()
        except (ClickHouseError, OSError) as error:
            store.close()
            raise StoreUnavailable(
                f"cannot check the store at {redacted(dsn)} after an interruption: {error}"
            ) from error
        if detached:
            log.warning(
                "detached %s: inserted right before the store was interrupted, without a durable deduplication"
                " record; their batches come back and are stored again (ALTER TABLE ... ATTACH PART restores one)",
                ", ".join(detached),
            )
    return store
