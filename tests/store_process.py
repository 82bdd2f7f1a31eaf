"""An embedded store opened in a process of its own, driven by a test one command at a time,
so the test can SIGKILL it where a power cut would stop it (``python -m tests.store_process
PATH``; one chdb path per process, and the test process must never hold one).

Commands, one JSON object per line on stdin, each answered with one JSON line on stdout:
``{"migrate": true}`` -> the labels applied; ``{"write": BATCH_ID, "site": UUID, "pages":
[PAGE_ID, ...]}`` -> the batch written through ``Store.write_batch`` (one pageview, one
event and one drop per page, half of them in January 2026 and half in February, so every
table gets two partitions), answered once it returned (with ``"unsynced": true`` the store
leaves the deduplication logs unsynced, as a process killed between ClickHouse's rename of
a part and the store's fsync would); ``{"stored": true}`` -> the stored
page_ids of pageviews and events and the sum of drop counts; ``{"fsync_settings": true}`` ->
tests.stores.fsync_settings. The answers are read by ``StoreProcess``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from tests.procs import ARTIFACTS
from tests.stores import event, fsync_settings, pageview, query, utc
from workers.records import Drop, DropReason
from workers.store.store import Store, open_store

REPOSITORY = Path(__file__).resolve().parent.parent


class StoreProcess:
    """``python -m tests.store_process`` on the chdb store at ``path``."""

    def __init__(self, path: Path) -> None:
        ARTIFACTS.add_store(path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.store_process", str(path)],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def ask(self, **command: Any) -> Any:
        """Send one command; its answer, once the process has carried it out."""
        stdin, stdout = self._pipes()
        stdin.write(json.dumps(command).encode() + b"\n")
        stdin.flush()
        answer = stdout.readline()
        assert answer, f"the store process exited with {self.process.wait()} before answering {command}"
        return json.loads(answer)

    def kill(self) -> None:
        """SIGKILL: nothing the process holds in memory reaches the disk, as in a power cut."""
        self.process.kill()
        self.process.wait()

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout


def write(store: StoreProcess, site: str, written: dict[str, list[str]], unsynced: bool = False) -> None:
    for batch_id, pages in written.items():
        assert store.ask(write=batch_id, site=site, pages=pages, unsynced=unsynced) == {"refused": 0}


def each_once(*written: dict[str, list[str]]) -> dict[str, object]:
    """What ``stored`` answers when every page of ``written`` is stored exactly once."""
    pages = sorted(page for batches_ in written for each in batches_.values() for page in each)
    return {"pageviews": pages, "events": pages, "drops": len(pages)}


def _write(store: Store, batch_id: str, site: str, pages: list[str], unsynced: bool) -> int:
    months = [utc(2026, 1, 31, 23, 59) if number % 2 else utc(2026, 2, 1, 0, 1) for number in range(len(pages))]
    rows = [pageview(site, month, page_id=page) for page, month in zip(pages, months, strict=True)]
    rows += [
        event(site, month, "signup", {"plan": "pro"}, page_id=page) for page, month in zip(pages, months, strict=True)
    ]
    drops = [Drop(site, DropReason.SPAM_REFERRER, month) for month in months]
    logs = store._deduplication_logs
    if unsynced:
        store._deduplication_logs = None
    try:
        refusals = store.write_batch(batch_id, rows, drops)
    finally:
        store._deduplication_logs = logs
    return len(refusals.rows) + len(refusals.drops)


def _stored(store: Store) -> dict[str, Any]:
    return {
        "pageviews": sorted(str(page) for (page,) in query(store, "SELECT page_id FROM pageviews")),
        "events": sorted(str(page) for (page,) in query(store, "SELECT page_id FROM events")),
        "drops": query(store, "SELECT sum(count) FROM drop_counts")[0][0],
    }


def main() -> None:
    store = open_store(f"chdb://{sys.argv[1]}")
    for line in sys.stdin:
        command = json.loads(line)
        if "migrate" in command:
            answer: Any = store.migrate()
        elif "write" in command:
            refused = _write(store, command["write"], command["site"], command["pages"], command.get("unsynced", False))
            answer = {"refused": refused}
        elif "stored" in command:
            answer = _stored(store)
        else:
            answer = fsync_settings(store)
        print(json.dumps(answer), flush=True)
    store.close()


if __name__ == "__main__":
    main()
