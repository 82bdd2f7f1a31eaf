"""What a power cut right after the last 202 loses, per durability mode: a measurement, not
a test (relaxed mode's loss depends on where Redis's once-a-second fsync fell).

    .venv/bin/python -m bench.power_cut [--runs 3] [--pageviews 3000] [--durability relaxed]
                                        [--worker]

Each run is a fresh machine of tests/test_power_cut.py (Redis's AOF and the chdb store on
LazyFS, tests/lazyfs.py; Redis ``appendfsync everysec`` in relaxed mode, ``always`` in the
others): N pageviews through the batch endpoint (100 per request, 4 in flight), the power
cut right after the last 202, Redis restarted on what its disk kept, a worker drains the
lanes, and the stored page_ids are counted against the 202s. Without ``--worker`` no worker
runs before the cut, so every loss is Redis's; with it one runs during the posts, as in the
test, and what the store lost is counted too. Needs root and /dev/fuse (LazyFS).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from shared.durability import Durability
from tests.lazyfs import LazyFS, fuse_unavailable
from tests.procs import Processes
from tests.test_power_cut import Machine, post_batches
from tests.traffic import UNLIMITED, ingest_token


def one_run(pageviews: int, durability: Durability, with_worker: bool) -> tuple[int, int, float]:
    """Lost and duplicated of ``pageviews`` accepted, and the seconds the posts took."""
    with tempfile.TemporaryDirectory(prefix="power-cut-") as tmp:
        root = Path(tmp)
        disks = [LazyFS(root / name, root / f"lazyfs-{name}") for name in ("redis", "store")]
        processes = Processes({**os.environ, **UNLIMITED, "HITSTREAM_REDIS_TIMEOUT_MS": "2000"}, root)
        for disk in disks:
            disk.mount()
        machine = Machine(*disks, processes, root, durability)
        try:
            secret = ingest_token(machine.client)
            api = machine.api()
            if with_worker:
                machine.worker().wait_ready(machine.client)
            started = time.monotonic()
            accepted = post_batches(api, secret, pageviews)
            posting = time.monotonic() - started
            machine.power_cut()
            stored = machine.stored_after_restart()
        finally:
            machine.shut_down()
            for disk in disks:
                disk.close()
    lost = len(set(accepted) - stored.keys())
    duplicated = sum(count - 1 for count in stored.values())
    return lost, duplicated, posting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pageviews", type=int, default=3000)
    parser.add_argument("--durability", type=Durability, choices=list(Durability), default=Durability.RELAXED)
    parser.add_argument("--worker", action="store_true", help="a worker runs (and stores) during the posts")
    args = parser.parse_args()
    if reason := fuse_unavailable():
        raise SystemExit(reason)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, durability {args.durability}, worker during the posts: {args.worker}"
    )
    losses = []
    for run in range(1, args.runs + 1):
        lost, duplicated, posting = one_run(args.pageviews, args.durability, args.worker)
        losses.append(lost)
        print(f"run {run}: {args.pageviews} answered 202 in {posting:.2f} s; lost {lost}, duplicated {duplicated}")
    print(f"lost of {args.pageviews}: {', '.join(map(str, losses))} (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
