"""The rejects file: one ``{"line": n, "status": s, "message": "..."}`` per rejected line.

``status`` is the endpoint's answer, or null for a line rejected before sending (malformed).
On resume the file is rewritten to hold exactly one entry for each rejected line the journal
holds as done: entries written after the last journal save are dropped (those lines are sent
again and rejected again), and a torn last line from a kill is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson


class RejectsFile:
    def __init__(self, path: Path, keep: Callable[[int], bool] | None) -> None:
        """Open for appending; ``keep`` (is this line done?) filters earlier entries on resume,
        and None starts an empty file."""
        self.path = path
        kept = _kept_entries(path, keep) if keep is not None else []
        self._file: IO[bytes] = path.open("wb")
        self._file.writelines(kept)
        self._file.flush()

    def write(self, line: int, status: int | None, message: str) -> None:
        self._file.write(orjson.dumps({"line": line, "status": status, "message": message}))
        self._file.write(b"\n")

    def flush(self) -> None:
        """Before each journal save, so a line the journal holds as done has its entry."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _kept_entries(path: Path, keep: Callable[[int], bool]) -> list[bytes]:
    if not path.exists():
        return []
    kept: dict[int, bytes] = {}
    for raw in path.read_bytes().splitlines():
        try:
            line = orjson.loads(raw)["line"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line from a kill
        if isinstance(line, int) and keep(line):
            kept.setdefault(line, raw + b"\n")
    return [kept[line] for line in sorted(kept)]
