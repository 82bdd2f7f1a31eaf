"""The ClickHouse store: open it from a DSN, migrate it, write batches, read site stats.

The same code serves the embedded engine (``chdb://PATH``) and a ClickHouse server
(``http(s)://HOST:8123``); only the DSN differs. A write failure is one of two kinds:
- the store is down or slow (no connection, a timeout, too many parts, an unknown error):
  ``StoreUnavailable``, which the batch job answers by retrying the whole batch;
- the store refuses the data (a closed set of ClickHouse error codes for values it cannot
  parse, convert or accept, or a value the Arrow conversion cannot hold): the insert is split
  in halves until the refused rows are alone, and ``write_batch`` returns them with the
  store's error for the batch job to dead-letter, while every other row is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from shared.urls import redacted
from workers.records import EVENT_COLUMNS, PAGEVIEW_COLUMNS, Drop, EventRow, PageviewRow
from workers.store.arrow import arrow_table
from workers.store.dsn import chdb_path, chdb_path_in_use
from workers.store.migrations import apply_migrations
from workers.store.schema import DROP_COUNTS, EVENTS, PAGEVIEWS, Table
from workers.store.stats import query_site_stats

# Every insert of a batch carries a token derived from the batch id as
# insert_deduplication_token: ClickHouse drops a block whose token it saw recently in that
# table and partition, so a retried batch is stored once. A batch's rows are inserted one
# block per partition (month), so no insert is refused for spanning too many partitions;
# each block carries the plain batch id, which is enough because ClickHouse tracks a token
# per partition (documented for insert_deduplication_token; tests/test_store_writer.py checks
# it), and which keeps a batch an older writer stored as one multi-month block deduplicated
# across an upgrade. A refused block is halved, each half under "<token>/0" and "<token>/1".
# async_insert is off because chdb defaults it on, and buffered inserts deduplicate by other
# rules; distributed_foreground_insert makes a Distributed table (cluster layout) answer only
# after the shards stored the rows.
_INSERT_SETTINGS = {"async_insert": 0, "insert_deduplicate": 1, "distributed_foreground_insert": 1}

_pageview_values = attrgetter(*PAGEVIEW_COLUMNS)
_event_values = attrgetter(*EVENT_COLUMNS)


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


class StoreUnavailable(Exception):
    """The store could not be reached, or it failed a statement for a reason other than the
    data; nothing of the failed statement was written."""


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

    def migrate(self, cluster: str | None = None) -> list[str]:
        """Apply pending numbered migrations; return the labels applied (empty: up to date)."""
        try:
            return apply_migrations(self._client, cluster)
        except ClickHouseError as error:
            raise StoreUnavailable(f"migrating the store at {self.dsn} failed: {error}") from error

    def write_batch(self, batch_id: str, rows: Sequence[PageviewRow], drops: Sequence[Drop]) -> Refusals:
        """Insert a batch's pageviews, events (``EventRow``) and drop counts, one insert per
        table and month, each at most once per ``batch_id``; return what the store refused.
        Raises StoreUnavailable (then retry the whole batch: what was stored is deduplicated)."""
        _require_aware_times(rows, drops)
        events = [position for position, row in enumerate(rows) if type(row) is EventRow]
        pageviews = [position for position, row in enumerate(rows) if type(row) is not EventRow]
        counted = drop_counts(drops)
        refusals = Refusals()
        try:
            for table, values, positions in ((PAGEVIEWS, _pageview_values, pageviews), (EVENTS, _event_values, events)):
                chosen = [rows[position] for position in positions]
                refused = self._insert_by_month(
                    batch_id, table, [values(row) for row in chosen], [_month(row.timestamp) for row in chosen]
                )
                refusals.rows.update((positions[index], error) for index, error in refused.items())
            refused = self._insert_by_month(
                batch_id, DROP_COUNTS, [row for row, _ in counted], [_month(row[2]) for row, _ in counted]
            )
            for index, error in refused.items():
                refusals.drops.update(dict.fromkeys(counted[index][1], error))
        except (ClickHouseError, OSError) as error:
            raise StoreUnavailable(f"batch {batch_id} was not stored in {self.dsn}: {error}") from error
        return refusals

    def _insert_by_month(
        self, batch_id: str, table: Table, rows: list[tuple[Any, ...]], months: list[int]
    ) -> dict[int, str]:
        """Insert ``rows`` one block per month (``table``'s partition); return the positions
        of refused rows with the store's error."""
        by_month: dict[int, list[int]] = {}
        for position, month in enumerate(months):
            by_month.setdefault(month, []).append(position)
        refused: dict[int, str] = {}
        for positions in by_month.values():
            self._insert_or_halve(batch_id, table, rows, positions, refused)
        return refused

    def _insert_or_halve(
        self, token: str, table: Table, rows: list[tuple[Any, ...]], positions: list[int], refused: dict[int, str]
    ) -> None:
        """Insert the rows at ``positions`` under ``token``; when the store refuses them, each
        half under its own token derived from this one, until a refused row is alone."""
        try:
            self._insert(token, table, [rows[position] for position in positions])
        except _Refused as error:
            if len(positions) == 1:
                refused[positions[0]] = str(error)
                return
            middle = len(positions) // 2
            self._insert_or_halve(f"{token}/0", table, rows, positions[:middle], refused)
            self._insert_or_halve(f"{token}/1", table, rows, positions[middle:], refused)

    def _insert(self, token: str, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        try:
            block = arrow_table(table, rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
            # A value that does not fit its column's type never reaches the store.
            raise _Refused(f"{type(error).__name__}: {error}") from error
        settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token}
        try:
            self._client.insert_arrow(table.name, block, settings=settings)
        except DatabaseError as error:
            if error.code in REFUSAL_CODES:
                raise _Refused(str(error)) from error
            raise

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


def drop_counts(drops: Sequence[Drop]) -> list[tuple[tuple[str, str, datetime, int], list[int]]]:
    """Drops added up per (site, reason, minute): one row each for the drop_counts table, with
    the positions of the drops counted in it."""
    counted: dict[tuple[str, str, datetime], list[int]] = {}
    for position, drop in enumerate(drops):
        key = (drop.site_id, drop.reason.value, drop.timestamp.replace(second=0, microsecond=0))
        counted.setdefault(key, []).append(position)
    return [
        ((site_id, reason, minute, len(positions)), positions)
        for (site_id, reason, minute), positions in counted.items()
    ]


def _month(moment: datetime) -> int:
    """The partition of a row at ``moment`` (an aware datetime): toYYYYMM in UTC."""
    utc = moment.astimezone(UTC)
    return utc.year * 100 + utc.month


def _require_aware_times(rows: Sequence[PageviewRow], drops: Sequence[Drop]) -> None:
    # A naive datetime does not say which instant it is; guessing would shift stored times.
    for row in rows:
        if row.timestamp.tzinfo is None or row.received_at.tzinfo is None:
            raise ValueError(f"PageviewRow.timestamp and .received_at must be timezone-aware (page_id {row.page_id})")
    for drop in drops:
        if drop.timestamp.tzinfo is None:
            raise ValueError(f"Drop.timestamp must be timezone-aware (site_id {drop.site_id}, reason {drop.reason})")
