"""Which lines are done, kept compactly and saved often, so a resumed replay skips them.

A line is done once its outcome is final (accepted, rejected, malformed or skipped). Lines are
started in ascending order; the journal keeps a low watermark (every started line at or below
it is done) and the set of done lines above it, which stays small: at most the lines in flight.
Line numbers may have gaps (multi-line CSV records); the watermark only covers started lines.

The state file (JSON, replaced atomically) also holds the input's identity and options, so a
different file or different reader options are refused instead of mixed, and the tally, so the
summary of a resumed replay covers the whole file.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

STATE_VERSION = 1


class StateMismatch(ValueError):
    """The state file belongs to a different input or different options."""


class Journal:
    def __init__(self, watermark: int = 0, done: set[int] | None = None) -> None:
        self.watermark = watermark
        self._done = set(done or ())
        self._pending: deque[int] = deque()
        self._highest_started = watermark

    def is_done(self, line: int) -> bool:
        return line <= self.watermark or line in self._done

    def start(self, line: int) -> None:
        """Announce a line about to be sent (or recorded); lines come in ascending order."""
        self._pending.append(line)
        self._highest_started = line

    def finish(self, line: int) -> None:
        self._done.add(line)
        while self._pending and self._pending[0] in self._done:
            self._pending.popleft()

    def snapshot(self) -> tuple[int, list[int]]:
        """(watermark, sorted done lines above it), dropping what the watermark now covers."""
        self.watermark = self._pending[0] - 1 if self._pending else max(self.watermark, self._highest_started)
        self._done = {line for line in self._done if line > self.watermark}
        return self.watermark, sorted(self._done)


@dataclass
class SavedState:
    identity: str
    options: dict[str, Any]
    watermark: int = 0
    done: list[int] = field(default_factory=list)
    tally: dict[str, Any] = field(default_factory=dict)

    def journal(self) -> Journal:
        return Journal(self.watermark, set(self.done))

    def check_matches(self, identity: str, options: dict[str, Any], path: Path) -> None:
        if identity != self.identity:
            raise StateMismatch(
                f"state file {path} belongs to a different input file (changed or replaced); "
                "use --restart to replay from the beginning"
            )
        if options != self.options:
            changed = sorted(k for k in {*options, *self.options} if options.get(k) != self.options.get(k))
            raise StateMismatch(
                f"state file {path} was written with different options ({', '.join(changed)}); "
                "use the same options to resume, or --restart"
            )


def load_state(path: Path) -> SavedState | None:
    if not path.exists():
        return None
    try:
        values = orjson.loads(path.read_bytes())
        if values.pop("version") != STATE_VERSION:
            raise ValueError(f"version is not {STATE_VERSION}")
        return SavedState(**values)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise StateMismatch(f"state file {path} is unreadable ({error}); use --restart") from None


def save_state(path: Path, state: SavedState) -> None:
    """Write to a temporary file, fsync, then rename: a crash leaves the old or the new state."""
    payload = orjson.dumps({"version": STATE_VERSION, **state.__dict__})
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as file:
        file.write(payload)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
