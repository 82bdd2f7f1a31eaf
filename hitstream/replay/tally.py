"""Counts of what happened to every line, saved with the journal, and the closing summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_GROUPS = 20  # rejection kinds listed in the summary; the rejects file has them all


@dataclass
class Tally:
    accepted: int = 0
    rejected: Counter[tuple[int | None, str]] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)  # why requests were retried
    already_done: int = 0  # lines skipped because an earlier run finished them

    def to_dict(self) -> dict[str, Any]:
        """The part that carries over to a resumed run."""
        return {
            "accepted": self.accepted,
            "rejected": [[status, message, count] for (status, message), count in self.rejected.items()],
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Tally:
        return cls(
            accepted=values.get("accepted", 0),
            rejected=Counter({(status, message): count for status, message, count in values.get("rejected", [])}),
            skipped=Counter(values.get("skipped", {})),
        )

    def summary(self, rejects_path: Path, seconds: float, sent_this_run: int) -> str:
        rejected = sum(self.rejected.values())
        lines = [
            f"sent {sent_this_run} pageviews in {seconds:.1f} s "
            f"({sent_this_run / seconds if seconds > 0 else 0:.0f}/s)",
            f"accepted: {self.accepted}",
            f"rejected: {rejected}" + (f" (each line in {rejects_path})" if rejected else ""),
        ]
        for (status, message), count in self.rejected.most_common(SUMMARY_GROUPS):
            lines.append(f"  {count:>8}  {status or 'not sent'}  {message}")
        if len(self.rejected) > SUMMARY_GROUPS:
            lines.append(f"  ... {len(self.rejected) - SUMMARY_GROUPS} more kinds")
        if self.skipped:
            lines.append(f"skipped: {sum(self.skipped.values())}")
            lines += [f"  {count:>8}  {reason}" for reason, count in self.skipped.most_common()]
        if self.retries:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.retries.most_common())
            lines.append(f"retried requests: {sum(self.retries.values())} ({reasons})")
        if self.already_done:
            lines.append(f"already done by an earlier run (resumed): {self.already_done} lines")
        return "\n".join(lines)
