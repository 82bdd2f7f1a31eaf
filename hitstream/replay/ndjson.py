"""NDJSON input: one request body (a JSON object) per line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from hitstream.replay.inputfile import open_binary
from hitstream.replay.records import Malformed, ReadResult, Sendable, Skipped


def read_ndjson(path: Path) -> Iterator[ReadResult]:
    with open_binary(path) as file:
        for line, raw in enumerate(file, start=1):
            if not raw.strip():
                yield Skipped(line, "blank line")
                continue
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield Malformed(line, "not valid JSON")
                continue
            if isinstance(body, dict):
                yield Sendable(line, body)
            else:
                yield Malformed(line, "not a JSON object")
