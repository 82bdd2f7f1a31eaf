"""``hitstream stats`` run as an operator runs it while workers start, drain and stop: one call
a second (or right after the last, when one takes longer) on a thread of its own, each
recorded with the phase it ran in, how long it took end to end and what it printed
(tests/test_stats_processes.py, bench/stats_bench.py).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

from hitstream.commands.store import STATS_WAIT_SECONDS
from tests.procs import HITSTREAM, Commands
from tests.timing import late_bound

# The sentences ``hitstream stats`` says why with when it cannot answer (workers.stats_reader),
# by their start.
REASONS = (
    "Error: the hitstream worker that owns the store at ",  # it is not answering yet, or is busy
    "Error: the chdb store at ",  # another process had it open, past the budget
)
# A call that has not ended by then hangs: the budget bounds its waits, and the rest (starting
# Python, reading a store it opened itself) is work a loaded machine only slows down.
HANG_SECONDS = late_bound(STATS_WAIT_SECONDS)


@dataclass(frozen=True, slots=True)
class StatsCall:
    phase: str
    seconds: float
    exit_code: int | None  # None: it hung, and was killed
    stdout: str
    stderr: str
    started_at: float  # Unix time, to set beside Redis's own latency events

    @property
    def pageviews(self) -> int | None:
        """The figure it printed, or None when it printed none."""
        return json.loads(self.stdout)["pageviews"] if self.exit_code == 0 else None

    @property
    def reason(self) -> str | None:
        """The one line of a call that said why it could not answer in the project's words,
        else None (figures, a hang, a traceback, someone else's words)."""
        lines = self.stderr.strip().splitlines()
        if self.exit_code == 1 and len(lines) == 1 and lines[0].startswith(REASONS):
            return lines[0]
        return None


class StatsOperator(threading.Thread):
    """Runs ``hitstream stats --site DOMAIN --json`` with ``env`` once a second until stopped;
    ``phase`` names what the workers are doing, for the calls that start from then on.
    ``hitstream``: the command that runs hitstream (bench/stats_bench.py times it)."""

    def __init__(
        self, commands: Commands, env: dict[str, str], domain: str, hitstream: tuple[str, ...] = (HITSTREAM,)
    ) -> None:
        super().__init__(name="stats-operator", daemon=True)
        self.commands = commands
        self.hitstream = hitstream
        self.env = env
        self.domain = domain
        self.phase = "no worker"
        self.calls: list[StatsCall] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            phase, started, started_at = self.phase, time.monotonic(), time.time()
            try:
                result = self.commands.run(
                    [*self.hitstream, "stats", "--site", self.domain, "--json"],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=HANG_SECONDS,
                )
                exit_code, stdout, stderr = result.returncode, result.stdout, result.stderr
            except subprocess.TimeoutExpired as hung:
                exit_code, stdout, stderr = None, str(hung.stdout or ""), str(hung.stderr or "")
            seconds = time.monotonic() - started
            self.calls.append(StatsCall(phase, seconds, exit_code, stdout, stderr, started_at))
            self.stopped.wait(max(0.0, 1.0 - seconds))

    def calls_in(self, phase: str) -> list[StatsCall]:
        return [call for call in self.calls if call.phase == phase]

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def latency_line(label: str, calls: list[StatsCall]) -> str:
    """Calls, their outcome and their wall time (p50, p99, max) as one line."""
    seconds = sorted(call.seconds for call in calls)
    if not seconds:
        return f"{label:<34} no call"
    p99 = seconds[min(len(seconds) - 1, round(0.99 * (len(seconds) - 1)))]
    figures = sum(call.pageviews is not None for call in calls)
    reasons = sum(call.reason is not None for call in calls)
    return (
        f"{label:<34} {len(calls):>4} calls  {figures:>4} figures  {reasons:>3} reasons"
        f"  {len(calls) - figures - reasons:>2} other  p50 {statistics.median(seconds):5.2f} s"
        f"  p99 {p99:5.2f} s  max {seconds[-1]:5.2f} s"
    )
