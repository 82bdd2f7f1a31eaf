"""A batch as the inserts that store it: Arrow blocks, one per table and month, each under
its deduplication token (see workers.store.store for why).

``prepare_batch`` needs no store, so an enricher process builds the blocks and hands them,
as Arrow, to the one process that writes an embedded store (workers.batch.delivery): Arrow
crosses processes at ~3 µs per row written, ~0.1 µs read, where pickling the row objects
costs ~19 µs and unpickling ~14 µs (1,000-row batches of bench/ua_mix.py traffic, measured
in one run on the shared 2-core machine, 2026-11-28).

A row whose values Arrow cannot hold never reaches the store: the block is halved, each
half under "<token>/0" and "<token>/1", until the refused row is alone; the store halves a
block it refuses the same way (workers.store.store), so tokens derive identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import pyarrow as pa

from workers.records import (
    CRAWLER_HIT_COLUMNS,
    EVENT_COLUMNS,
    PAGEVIEW_COLUMNS,
    CrawlerHitRow,
    Drop,
    EventRow,
    PageviewRow,
    StoredRow,
)
from workers.store.arrow import arrow_table
from workers.store.schema import CRAWLER_HITS, DROP_COUNTS, EVENTS, PAGEVIEWS, Table

# Each row type, the table it is stored in and how its values are read, in column order.
_TABLES: dict[type, tuple[Table, attrgetter[Any]]] = {
    PageviewRow: (PAGEVIEWS, attrgetter(*PAGEVIEW_COLUMNS)),
    EventRow: (EVENTS, attrgetter(*EVENT_COLUMNS)),
    CrawlerHitRow: (CRAWLER_HITS, attrgetter(*CRAWLER_HIT_COLUMNS)),
}


def table_of(row: StoredRow) -> Table:
    """The table ``row`` is stored in."""
    return _TABLES[type(row)][0]


@dataclass(frozen=True, slots=True)
class Block:
    """One insert: rows of one table and month, under a deduplication token."""

    token: str
    table: Table
    data: pa.Table
    # Per row, its position in the batch's rows (drop_counts: in PreparedBatch.counted).
    positions: list[int]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    batch_id: str
    blocks: list[Block]
    counted: list[list[int]]  # per drop_counts row: the positions of the drops it counts
    refused_rows: dict[int, str] = field(default_factory=dict)  # rows Arrow could not hold
    refused_counts: dict[int, str] = field(default_factory=dict)  # drop_counts rows likewise


def prepare_batch(batch_id: str, rows: Sequence[StoredRow], drops: Sequence[Drop]) -> PreparedBatch:
    """The blocks that insert a batch's pageviews, events (``EventRow``), crawler hits
    (``CrawlerHitRow``) and drop counts."""
    _require_aware_times(rows, drops)
    counted = drop_counts(drops)
    prepared = PreparedBatch(batch_id, [], [positions for _, positions in counted])
    by_type: dict[type, list[int]] = {row_type: [] for row_type in _TABLES}
    for position, row in enumerate(rows):
        by_type[type(row)].append(position)
    for row_type, positions in by_type.items():
        table, values = _TABLES[row_type]
        _by_month(
            prepared,
            table,
            [values(rows[position]) for position in positions],
            [_month(rows[position].timestamp) for position in positions],
            positions,
            prepared.refused_rows,
        )
    _by_month(
        prepared,
        DROP_COUNTS,
        [row for row, _ in counted],
        [_month(row[2]) for row, _ in counted],
        list(range(len(counted))),
        prepared.refused_counts,
    )
    return prepared


def _by_month(
    prepared: PreparedBatch,
    table: Table,
    values: list[tuple[Any, ...]],
    months: list[int],
    positions: list[int],
    refused: dict[int, str],
) -> None:
    """One block per month (``table``'s partition), under the batch id."""
    by_month: dict[int, list[int]] = {}
    for index, month in enumerate(months):
        by_month.setdefault(month, []).append(index)
    for indexes in by_month.values():
        _convert_or_halve(
            prepared, prepared.batch_id, table, [values[i] for i in indexes], [positions[i] for i in indexes], refused
        )


def _convert_or_halve(
    prepared: PreparedBatch,
    token: str,
    table: Table,
    values: list[tuple[Any, ...]],
    positions: list[int],
    refused: dict[int, str],
) -> None:
    try:
        data = arrow_table(table, values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        if len(values) == 1:
            refused[positions[0]] = f"{type(error).__name__}: {error}"
            return
        middle = len(values) // 2
        _convert_or_halve(prepared, f"{token}/0", table, values[:middle], positions[:middle], refused)
        _convert_or_halve(prepared, f"{token}/1", table, values[middle:], positions[middle:], refused)
        return
    prepared.blocks.append(Block(token, table, data, positions))


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


def _require_aware_times(rows: Sequence[StoredRow], drops: Sequence[Drop]) -> None:
    # A naive datetime does not say which instant it is; guessing would shift stored times.
    for row in rows:
        if row.timestamp.tzinfo is None or row.received_at.tzinfo is None:
            row_id = row.hit_id if isinstance(row, CrawlerHitRow) else row.page_id
            raise ValueError(f"{type(row).__name__}.timestamp and .received_at must be timezone-aware (id {row_id})")
    for drop in drops:
        if drop.timestamp.tzinfo is None:
            raise ValueError(f"Drop.timestamp must be timezone-aware (site_id {drop.site_id}, reason {drop.reason})")
