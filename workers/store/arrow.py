"""Rows as Arrow tables: the format the store inserts in.

Arrow is columnar and typed, so ClickHouse (the embedded engine or a server) reads it in C++
as cheaply as its Native format, while the Python side only gathers each column into one
``pa.array``. clickhouse-connect's own conversion to Native (LowCardinality dictionaries, UUIDs,
DateTime64 ticks, built value by value in Python) costs more CPU per row; bench/store_bench.py
measures both.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import pyarrow as pa

from workers.store.schema import Table

# ClickHouse column type -> the Arrow type it is sent as. ClickHouse converts on insert:
# strings become UUIDs and LowCardinality values, timestamps become DateTime/DateTime64
# (pyarrow turns aware datetimes into UTC instants, truncating to the unit).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "String": pa.string(),
    "LowCardinality(String)": pa.string(),
    "LowCardinality(Nullable(String))": pa.string(),
    "UUID": pa.string(),
    "Nullable(UUID)": pa.string(),
    "DateTime64(3, 'UTC')": pa.timestamp("ms", tz="UTC"),
    "DateTime('UTC')": pa.timestamp("s", tz="UTC"),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Bool": pa.bool_(),
    "Map(String, String)": pa.map_(pa.string(), pa.string()),
}


@cache
def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of ``table``'s columns; a column type without a mapping is a bug here."""
    try:
        return pa.schema([(column.name, _ARROW_TYPES[column.type]) for column in table.columns])
    except KeyError as error:
        raise TypeError(f"no Arrow type for ClickHouse type {error.args[0]!r} (table {table.name})") from None


def arrow_table(table: Table, rows: Sequence[Sequence[Any]]) -> pa.Table:
    """``rows`` (at least one; value tuples in ``table``'s column order) as one Arrow table."""
    schema = arrow_schema(table)
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )
