"""CSV input: a header row with the request body's field names, one pageview per record.

An empty cell means the field is absent; screen and viewport sizes are whole numbers and
``dnt`` is a boolean (true/false, 1/0, yes/no). Line numbers are physical lines, the header
being line 1; a record spanning several lines (quoted newlines) has the number of its first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hitstream.replay.inputfile import open_binary
from hitstream.replay.records import Malformed, ReadResult, ReplayInputError, Sendable, Skipped

REQUIRED_FIELDS = ("url", "timestamp", "visitor_ip", "user_agent")
TEXT_FIELDS = (*REQUIRED_FIELDS, "referrer", "language", "session_id", "page_id")
INT_FIELDS = ("screen_width", "screen_height", "viewport_width", "viewport_height")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class CellError(ValueError):
    pass


def _whole_number(field: str) -> Callable[[str], int]:
    def parse(cell: str) -> int:
        try:
            return int(cell)
        except ValueError:
            raise CellError(f"{field} must be a whole number") from None

    return parse


def _boolean(cell: str) -> bool:
    try:
        return BOOLEANS[cell.lower()]
    except KeyError:
        raise CellError("dnt must be true or false") from None


PARSERS: dict[str, Callable[[str], Any]] = {
    **{field: str for field in TEXT_FIELDS},
    **{field: _whole_number(field) for field in INT_FIELDS},
    "dnt": _boolean,
}


def check_header(header: list[str]) -> None:
    unknown = [name for name in header if name not in PARSERS]
    if unknown:
        raise ReplayInputError(f"CSV column {unknown[0]!r} is not a pageview field (known: {', '.join(PARSERS)})")
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        raise ReplayInputError(f"CSV header lacks the required column {missing[0]!r}")


def read_csv(path: Path) -> Iterator[ReadResult]:
    """Check the header now (ReplayInputError), then yield one result per record."""
    text = io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text)
    header = [name.strip() for name in next(reader, [])]
    try:
        check_header(header)
    except ReplayInputError:
        text.close()
        raise
    return _records(text, reader, header)


def _records(text: io.TextIOWrapper, reader: Any, header: list[str]) -> Iterator[ReadResult]:
    with text:
        line = reader.line_num + 1
        for row in reader:
            yield _record(line, header, row)
            line = reader.line_num + 1


def _record(line: int, header: list[str], row: list[str]) -> ReadResult:
    if not any(cell.strip() for cell in row):
        return Skipped(line, "blank line")
    if len(row) != len(header):
        return Malformed(line, f"CSV record has {len(row)} cells, the header has {len(header)}")
    body: dict[str, Any] = {}
    try:
        for name, cell in zip(header, row, strict=True):  # lengths checked above
            cell = cell.strip()
            if cell:
                body[name] = PARSERS[name](cell)
    except CellError as error:
        return Malformed(line, str(error))
    return Sendable(line, body)
