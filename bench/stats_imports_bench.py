"""What one ``hitstream stats --json`` costs to start: its wall time and the time its imports
took (``python -X importtime``, summed), when it asks the worker that owns an embedded store
and when it reads the store itself (no worker), with the engine's modules it loaded.

    .venv/bin/python -m bench.stats_imports_bench --baseline-code /path/to/another/checkout [--calls 10]

Starts its own Redis (AOF on, free port), migrates a fresh chdb path and adds one site; a
``hitstream worker`` of this checkout owns the store for the first half. The calls of this
checkout and of ``--baseline-code`` (its directory first on PYTHONPATH: the code before a
change) alternate, so both meet the same load.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.bench_redis import start_redis
from workers.store.dsn import store_owner

ROOT = Path(__file__).resolve().parent.parent
ENGINE_MODULES = ("chdb", "clickhouse_connect", "pyarrow")
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")
DOMAIN = "example.com"


def stats_call(code: Path, env: dict[str, str]) -> tuple[float, float, set[str]]:
    """One call's wall time, its imports' time and the engine modules it loaded."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hitstream", "stats", "--site", DOMAIN, "--json", "--wait", "30"],
        env={**env, "PYTHONPATH": str(code)},
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"hitstream stats failed ({code}): {result.stderr[-2000:]}")
    imported = [IMPORT_LINE.match(line) for line in result.stderr.splitlines()]
    seconds = sum(int(match.group(1)) for match in imported if match) / 1e6
    engine = {match.group(2).split(".")[0] for match in imported if match} & set(ENGINE_MODULES)
    return wall, seconds, engine


def measure(label: str, codes: dict[str, Path], env: dict[str, str], calls: int) -> None:
    walls: dict[str, list[float]] = {name: [] for name in codes}
    imports: dict[str, list[float]] = {name: [] for name in codes}
    engine: dict[str, set[str]] = {name: set() for name in codes}
    for _ in range(calls):
        for name, code in codes.items():
            wall, seconds, loaded = stats_call(code, env)
            walls[name].append(wall)
            imports[name].append(seconds)
            engine[name] |= loaded
    for name in codes:
        print(
            f"{label:<18} {name:<9} {calls} calls  wall p50 {statistics.median(walls[name]):.2f} s"
            f" (min {min(walls[name]):.2f}, max {max(walls[name]):.2f})  imports p50"
            f" {statistics.median(imports[name]):.2f} s (min {min(imports[name]):.2f}, max {max(imports[name]):.2f})"
            f"  engine modules: {', '.join(sorted(engine[name])) or 'none'}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-code", type=Path, required=True, help="another checkout: the code before")
    parser.add_argument("--calls", type=int, default=10, help="calls per checkout and path")
    arguments = parser.parse_args()
    codes = {"this": ROOT, "baseline": arguments.baseline_code.resolve()}
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stats-imports-")))
        server = start_redis(stack, scratch / "redis", "everysec")
        store = scratch / "chdb"
        env = {**os.environ, "HITSTREAM_REDIS_URL": server.url, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}"}
        hitstream = [sys.executable, "-m", "hitstream"]
        subprocess.run([*hitstream, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
        subprocess.run([*hitstream, "sites", "add", DOMAIN], env=env, cwd=ROOT, check=True, capture_output=True)
        with open(scratch / "worker.log", "w") as log:
            worker = subprocess.Popen([*hitstream, "worker"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while store_owner(store) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not take the store within 120 s")
                time.sleep(0.2)
            stats_call(ROOT, env)  # answered once: the worker has opened its store
            print(f"load average {', '.join(f'{load:.1f}' for load in os.getloadavg())}", flush=True)
            measure("asking the worker", codes, env, arguments.calls)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        measure("reading the store", codes, env, arguments.calls)
        print(f"load average {', '.join(f'{load:.1f}' for load in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
