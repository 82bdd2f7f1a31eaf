"""``hitstream`` that appends, to the file named by $STATS_TIMES, how long its imports and its
command took (one line per call: "<imports> <command>" in seconds), so bench/stats_bench.py can
tell Python's start from the command's own time. Run as a script, so that the ``hitstream``
it imports is the one PYTHONPATH names."""

import os
import sys
import time

started = time.monotonic()
from hitstream.main import cli  # noqa: E402 (timed)

imported = time.monotonic()
try:
    cli(sys.argv[1:])
finally:
    with open(os.environ["STATS_TIMES"], "a") as times:
        times.write(f"{imported - started:.3f} {time.monotonic() - imported:.3f}\n")
