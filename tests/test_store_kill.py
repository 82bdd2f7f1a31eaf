"""A store process SIGKILLed inside an insert, with no power cut. ClickHouse writes a block's
deduplication record, then renames the block's part into place: a kill between the two leaves
a record whose part never came to be. The batch was not acknowledged, so it comes back under
its id, and that record made ClickHouse drop it as a duplicate (CI, 2026-12-07: 490 pageviews
of one batch lost after the store writer of ``hitstream worker -n 2`` was SIGKILLed
mid-insert, tests/test_worker_scale_out.py). Each case puts one table's last insert back where
such a kill leaves it, its part under ClickHouse's temporary name, and writes the batch again.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.procs import Commands
from tests.store_process import StoreProcess, each_once, write
from workers.store.deduplication_logs import LOG_DIRECTORY

TABLES = ("pageviews", "events", "drop_counts")


def killed_before_the_rename(store: Path, table: str) -> str:
    """Rename ``table``'s last inserted part back to the temporary name it had until
    ClickHouse renamed it into place, right after writing its deduplication record; the part."""
    directory = store / "data" / "default" / table
    logs = sorted((directory / LOG_DIRECTORY).iterdir(), key=lambda log: int(log.stem.rpartition("_")[2]))
    last_record = [line for log in logs for line in log.read_text().splitlines()][-1]
    operation, part, _ = last_record.split("\t")
    assert operation == "1" and (directory / part).is_dir()
    (directory / part).rename(directory / f"tmp_insert_{part}")
    return part


def one_batch() -> dict[str, list[str]]:
    # One batch into a new store: one part per table and month, so no merge can cover the part.
    return {f"b:{uuid.uuid4()}": [str(uuid.uuid4()) for _ in range(1_000)]}


@pytest.mark.parametrize("table", TABLES)
def test_a_batch_killed_between_its_record_and_its_part_is_stored_once_when_written_again(
    commands: Commands, tmp_path: Path, table: str
) -> None:
    path = tmp_path / "chdb"
    first = StoreProcess(path)
    first.ask(migrate=True)
    site = str(uuid.uuid4())
    written = one_batch()
    write(first, site, written)
    first.kill()
    killed_before_the_rename(path, table)

    again = StoreProcess(path)
    write(again, site, written)  # its batch was not acknowledged: it comes back, same id
    assert again.ask(stored=True) == each_once(written)
    more = one_batch()
    write(again, site, more)
    write(again, site, more)
    assert again.ask(stored=True) == each_once(written, more)
    again.kill()
