"""Power cuts under the store alone: an embedded store on LazyFS (tests/lazyfs.py), written
through ``Store.write_batch`` in a process of its own (tests/store_process.py) that is
SIGKILLed, then every write not fsynced is dropped, the disk mounted again and the store
opened by a new process. What ``write_batch`` returned must all be there, a batch written again
under its id must not be stored twice, and a store cut right after ``migrate`` must open with
its schema. Before the fsync settings every row written was gone after such a cut, and before
the deduplication logs were fsynced a batch written again was stored twice (3,000 of 3,000
pageviews each, measured on LazyFS).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.lazyfs import LazyFS
from tests.store_process import StoreProcess, each_once, write
from tests.stores import DURABLE_TABLES
from workers.store.migrations import MIGRATIONS

pytestmark = pytest.mark.faults

BATCHES = 3
PER_BATCH = 1_000


class StoreDisk:
    """An embedded store on a LazyFS disk, and the one process that has it open."""

    def __init__(self, disk: LazyFS) -> None:
        self.disk = disk
        self.path = disk.mount_dir / "chdb"
        self.process = StoreProcess(self.path)

    def power_cut(self) -> None:
        """Kill the store's process, drop what was not fsynced, open the store again."""
        self.process.kill()
        self.disk.power_cut()
        self.disk.unmount()
        self.disk.mount()
        self.process = StoreProcess(self.path)


@pytest.fixture
def store_disk(lazyfs: Callable[[str], LazyFS]) -> Iterator[StoreDisk]:
    opened = StoreDisk(lazyfs("store"))
    yield opened
    opened.process.kill()  # before the disk is unmounted


def batches() -> dict[str, list[str]]:
    return {f"b:{uuid.uuid4()}": [str(uuid.uuid4()) for _ in range(PER_BATCH)] for _ in range(BATCHES)}


def test_every_row_a_returned_write_batch_stored_is_there_after_a_power_cut(store_disk: StoreDisk) -> None:
    assert len(store_disk.process.ask(migrate=True)) == len(MIGRATIONS)
    site = str(uuid.uuid4())
    written = batches()
    write(store_disk.process, site, written)

    store_disk.power_cut()

    assert store_disk.process.ask(stored=True) == each_once(written)
    assert store_disk.process.ask(migrate=True) == []


def test_a_batch_written_again_after_a_power_cut_under_its_id_is_stored_once(store_disk: StoreDisk) -> None:
    store_disk.process.ask(migrate=True)
    site = str(uuid.uuid4())
    written = batches()
    write(store_disk.process, site, written)

    # The worker was cut between the insert and its acknowledgement: its batches come back.
    store_disk.power_cut()
    write(store_disk.process, site, written)

    assert store_disk.process.ask(stored=True) == each_once(written)
    more = batches()
    write(store_disk.process, site, more)
    assert store_disk.process.ask(stored=True) == each_once(written, more)


def test_a_batch_cut_between_its_insert_and_the_log_fsync_is_stored_once_when_written_again(
    store_disk: StoreDisk,
) -> None:
    store_disk.process.ask(migrate=True)
    site = str(uuid.uuid4())
    written = batches()
    write(store_disk.process, site, written)
    # The cut lands after ClickHouse renamed the last batch's parts into place, before the
    # store fsynced their deduplication records: the parts survive, the records do not.
    last = {f"b:{uuid.uuid4()}": [str(uuid.uuid4()) for _ in range(PER_BATCH)]}
    write(store_disk.process, site, last, unsynced=True)

    store_disk.power_cut()
    write(store_disk.process, site, {**written, **last})

    assert store_disk.process.ask(stored=True) == each_once(written, last)


def test_a_power_cut_right_after_migrate_leaves_a_store_that_opens_and_finds_its_schema(
    store_disk: StoreDisk,
) -> None:
    assert store_disk.process.ask(migrate=True) == [migration.label for migration in MIGRATIONS]

    store_disk.power_cut()

    assert store_disk.process.ask(migrate=True) == []
    assert store_disk.process.ask(fsync_settings=True) == {name: list(value) for name, value in DURABLE_TABLES.items()}
    site = str(uuid.uuid4())
    written = batches()
    write(store_disk.process, site, written)
    store_disk.power_cut()
    assert store_disk.process.ask(stored=True) == each_once(written)
