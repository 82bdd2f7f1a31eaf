"""The ClickHouse store: open it from a DSN, migrate it, write batches, read site stats.

The same code serves the embedded engine (``chdb://PATH``) and a ClickHouse server
(``http(s)://HOST:8123``); only the DSN differs. Every failure to reach the store or to write
to it surfaces as ``StoreUnavailable``, which the batch job answers by retrying the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from operator import attrgetter
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from shared.urls import redacted
from workers.records import EVENT_COLUMNS, PAGEVIEW_COLUMNS, Drop, EventRow, PageviewRow
from workers.store.arrow import arrow_table
from workers.store.dsn import chdb_path, chdb_path_in_use
from workers.store.migrations import apply_migrations
from workers.store.schema import DROP_COUNTS, EVENTS, PAGEVIEWS, Table
from workers.store.stats import query_site_stats

# Every insert of a batch carries the batch id as insert_deduplication_token: ClickHouse drops
# a block whose token it saw recently in that table (per partition), so a retried batch is
# stored once.
# async_insert is off because chdb defaults it on, and buffered inserts deduplicate by other
# rules; distributed_foreground_insert makes a Distributed table (cluster layout) answer only
# after the shards stored the rows.
_INSERT_SETTINGS = {"async_insert": 0, "insert_deduplicate": 1, "distributed_foreground_insert": 1}

_pageview_values = attrgetter(*PAGEVIEW_COLUMNS)
_event_values = attrgetter(*EVENT_COLUMNS)


class StoreUnavailable(Exception):
    """The store could not be reached, or it rejected a statement; nothing was written."""


class Store:
    def __init__(self, client: Client, dsn: str) -> None:
        self._client = client
        self.dsn = redacted(dsn)

    def migrate(self, cluster: str | None = None) -> list[str]:
        """Apply pending numbered migrations; return the labels applied (empty: up to date)."""
        try:
            return apply_migrations(self._client, cluster)
        except ClickHouseError as error:
            raise StoreUnavailable(f"migrating the store at {self.dsn} failed: {error}") from error

    def write_batch(self, batch_id: str, rows: Sequence[PageviewRow], drops: Sequence[Drop]) -> None:
        """Insert a batch's pageviews, events (``EventRow``) and drop counts: one insert per
        table that has something to store, each at most once per ``batch_id``."""
        _require_aware_times(rows, drops)
        events = [_event_values(row) for row in rows if type(row) is EventRow]
        pageviews = [_pageview_values(row) for row in rows if type(row) is not EventRow]
        try:
            self._insert(batch_id, PAGEVIEWS, pageviews)
            self._insert(batch_id, EVENTS, events)
            self._insert(batch_id, DROP_COUNTS, drop_counts(drops))
        except (ClickHouseError, OSError) as error:
            raise StoreUnavailable(f"batch {batch_id} was not stored in {self.dsn}: {error}") from error

    def _insert(self, batch_id: str, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            settings = {**_INSERT_SETTINGS, "insert_deduplication_token": batch_id}
            self._client.insert_arrow(table.name, arrow_table(table, rows), settings=settings)

    def site_stats(self, site_id: str, date_from: date | None, date_to: date | None, limit: int = 10) -> dict[str, Any]:
        """Totals and top lists for one site between two dates (inclusive, UTC)."""
        try:
            return query_site_stats(self._client, site_id, date_from, date_to, limit)
        except ClickHouseError as error:
            raise StoreUnavailable(f"reading stats from {self.dsn} failed: {error}") from error

    def close(self) -> None:
        self._client.close()


def open_store(dsn: str) -> Store:
    """Connect to the store named by ``dsn``; raise StoreUnavailable if it cannot be opened."""
    path = chdb_path(dsn)
    if path is not None and chdb_path_in_use(path):
        raise StoreUnavailable(f"the chdb store at {path} is open in another process (only one process may open it)")
    try:
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        else:
            # No session id: the worker's batch writes and stats jobs may share one client.
            client = clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)
    except (ClickHouseError, OSError) as error:
        raise StoreUnavailable(f"cannot open the store at {redacted(dsn)}: {error}") from error
    return Store(client, dsn)


def drop_counts(drops: Sequence[Drop]) -> list[tuple[str, str, Any, int]]:
    """Drops added up per (site, reason, minute): one row each for the drop_counts table."""
    counts = Counter((drop.site_id, drop.reason.value, drop.timestamp.replace(second=0, microsecond=0)) for drop in drops)
    return [(site_id, reason, minute, count) for (site_id, reason, minute), count in counts.items()]


def _require_aware_times(rows: Sequence[PageviewRow], drops: Sequence[Drop]) -> None:
    # A naive datetime does not say which instant it is; guessing would shift stored times.
    for row in rows:
        if row.timestamp.tzinfo is None or row.received_at.tzinfo is None:
            raise ValueError(f"PageviewRow.timestamp and .received_at must be timezone-aware (page_id {row.page_id})")
    for drop in drops:
        if drop.timestamp.tzinfo is None:
            raise ValueError(f"Drop.timestamp must be timezone-aware (site_id {drop.site_id}, reason {drop.reason})")
