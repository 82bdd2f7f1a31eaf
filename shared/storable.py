"""What the store can hold: the value ranges of the ClickHouse column types that envelope
fields land in, in one place.

The API refuses (400, naming the field) any value outside these ranges, so nothing it answers
202 is unstorable; the worker checks each envelope against them again before the pipeline, so
an envelope that slipped past (an older API, a hand-written stream entry) becomes a dead
letter instead of a refused insert. ``workers/store/schema.py`` declares its columns with
these same type names, and a test keeps the two in step.
"""

from __future__ import annotations

from datetime import UTC, datetime

# ClickHouse integer type -> the inclusive range of values it holds.
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
}

_MS_PER_DAY = 86_400_000

# Time types -> the inclusive range of instants they hold, in ms since the epoch (UTC).
# DateTime is seconds in a UInt32; Date is days since 1970-01-01 in a UInt16;
# DateTime64 spans 1900-01-01 to 2299-12-31.
TIME_RANGES_MS: dict[str, tuple[int, int]] = {
    "DateTime('UTC')": (0, INTEGER_RANGES["UInt32"][1] * 1000 + 999),
    "Date": (0, (INTEGER_RANGES["UInt16"][1] + 1) * _MS_PER_DAY - 1),
    "DateTime64(3, 'UTC')": (
        int(datetime(1900, 1, 1, tzinfo=UTC).timestamp() * 1000),
        int(datetime(2299, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC).timestamp() * 1000),
    ),
}

# A pageview's time is stored as DateTime64(3, 'UTC'), its drop count's minute as
# DateTime('UTC'), and reports group it by Date: it must fit all three. Outside this range
# ClickHouse wraps or clamps silently (a 1969 pageview was reported under 2149).
TIMESTAMP_COLUMN_TYPES = ("DateTime64(3, 'UTC')", "DateTime('UTC')", "Date")
TIMESTAMP_RANGE_MS: tuple[int, int] = (
    max(TIME_RANGES_MS[name][0] for name in TIMESTAMP_COLUMN_TYPES),
    min(TIME_RANGES_MS[name][1] for name in TIMESTAMP_COLUMN_TYPES),
)

# Screen and viewport sizes are UInt32 columns.
DIMENSION_COLUMN_TYPE = "UInt32"

# What a server reports of its answer to a crawler (the AI-fetch endpoint): the HTTP status,
# a UInt16 column, limited to HTTP's own range; the response time and size.
STATUS_CODE_RANGE = (100, 599)
RESPONSE_MS_COLUMN_TYPE = "UInt32"
BYTES_SERVED_COLUMN_TYPE = "UInt64"
