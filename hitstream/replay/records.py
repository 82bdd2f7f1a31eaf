"""What a reader yields for each line (or CSV record) of an input file, in file order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sendable:
    """A line that became a pageview request body, to send (the endpoint validates its
    fields)."""

    line: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that cannot become a request body: listed in the rejects file, never sent."""

    line: int
    reason: str  # a fixed text (no values from the line), so the summary can group by it


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line deliberately not replayed (blank line, asset, redirect, ...): only counted."""

    line: int
    reason: str


ReadResult = Sendable | Malformed | Skipped


class ReplayInputError(ValueError):
    """The input as a whole cannot be replayed (e.g. a CSV header naming an unknown field)."""
