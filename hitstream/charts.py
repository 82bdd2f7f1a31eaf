"""A time series as a bar chart for the terminal (``rich``): one row per hour, day or month.

Rendered by ``rich``, which writes colours and styles only to a terminal; piped or redirected,
the same chart is plain text (Unicode block characters, no escape sequences).
"""

from __future__ import annotations

from typing import Any

from rich.bar import Bar
from rich.table import Table

BAR_WIDTH = 40
# The start of a period as stored (ISO text) -> its label: how many characters to keep.
_LABEL_LENGTH = {"hour": len("2026-11-28T09:00"), "day": len("2026-11-28"), "month": len("2026-11")}


def series_chart(title: str, unit: str, points: list[list[Any]]) -> Table:
    """Horizontal bars of ``points`` ([period start as ISO text, count], ...) per ``unit``."""
    chart = Table(box=None, title=f"{title} per {unit}", title_justify="left", pad_edge=False)
    chart.add_column(unit.capitalize())
    chart.add_column("")
    chart.add_column(title, justify="right")
    largest = max((count for _, count in points), default=0)
    for start, count in points:
        label = str(start)[: _LABEL_LENGTH[unit]].replace("T", " ")
        chart.add_row(label, Bar(max(largest, 1), 0, count, width=BAR_WIDTH), str(count))
    if not points:
        chart.add_row("(none)", "", "")
    return chart
