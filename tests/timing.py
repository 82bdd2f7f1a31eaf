"""The one kind of time bound a test asserts: a contract about a configured time, such as
"answers 503 within the Redis timeout rather than hanging", checked with room for a loaded
machine.

Waiting is never timed (a test waits for an observable condition: tests.procs.wait_until),
and no bound is a margin over how fast something usually is. Where the contract itself is a
time, the bound is ``LATE_FACTOR`` times the configured time: a loaded two-core machine
delays the milliseconds of work around a timeout, never by nine times the timeout, while a
hang, or a wait for some other, longer bound (a socket's default, a retry loop), still
overruns it.
"""

from __future__ import annotations

LATE_FACTOR = 10


def late_bound(configured_seconds: float) -> float:
    """The most a test lets an action bounded by ``configured_seconds`` take, end to end."""
    return LATE_FACTOR * configured_seconds
