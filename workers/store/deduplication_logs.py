"""An embedded store's deduplication logs, kept in step with its parts across a power cut, so
that a batch stored before the cut is not stored a second time after it.

A non-replicated MergeTree table remembers the insert_deduplication_token of its last blocks
in ``<table data path>/deduplication_logs/deduplication_log_N.txt``. Inside an insert,
ClickHouse appends the block's record there, then renames the block's part into place (the
part fsynced, with the tables' DURABLE_INSERT_SETTINGS); it fsyncs the log only when it starts
a new file, every 2 x DEDUPLICATION_WINDOW records (MergeTreeDeduplicationLog::addPart flushes
to the OS and no further). A power cut before the batch's acknowledgement then kept the part
and lost its record: the batch, re-claimed under the same id, was stored a second time.

So the store writer, after each insert, fsyncs the table's current log, the table's directory
(where the part's new name is: ClickHouse fsyncs the part's own directory, not the one holding
its name) and, when the log is a new file, the log directory. That leaves the instant between
ClickHouse's rename and the writer's fsync (a process killed inside an insert, then the
power cut): only the last insert into a table can be in it, and its part is newer than every
recorded block. ``Store.detach_unrecorded_parts`` detaches such a part when a store is opened
after an interruption; its batch was not acknowledged, so it comes back and is stored once.
Cost of the fsyncs: median 1.9 ms per insert (p90 11 ms; the log 0.8, the table directory
0.3), timed inside write_batch on the shared 2-core VM; docs/reliability.md has the figures.

Only an embedded store (``chdb://PATH``) has its files in this process's reach; a ClickHouse
server's residual window is in docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

LOG_DIRECTORY = "deduplication_logs"
_LOG_PREFIX = "deduplication_log_"
_LOG_SUFFIX = ".txt"
_ADDED = "1"  # a record's operation: a part added (2: dropped)


class DeduplicationLogs:
    """The deduplication logs of an embedded store's tables.

    ``data_paths`` answers a table's data directories (system.tables.data_paths); they are
    asked once per table and kept, and asked again after a sync failed (a table dropped and
    created again has a new directory)."""

    def __init__(self, data_paths: Callable[[str], list[Path]]) -> None:
        self._data_paths = data_paths
        self._known: dict[str, list[Path]] = {}
        self._synced_logs: set[Path] = set()  # log files whose directory entry was fsynced

    def sync(self, table: str) -> None:
        """fsync what an insert into ``table`` wrote and ClickHouse left unsynced. Raises
        OSError if a file cannot be synced."""
        try:
            for data_path in self._paths(table):
                self._sync_table(data_path)
        except OSError:
            self._known.clear()
            raise

    def last_recorded_block(self, table: str) -> int | None:
        """The highest block number of the parts ``table``'s logs record as inserted (0: none
        recorded yet; None: the table has no deduplication logs, or does not exist).

        Every insert into these tables is recorded (each has a deduplication window since its
        creation), and the writer fsyncs a record before its batch counts as stored, so only
        the last insert before a power cut can have left a part newer than this number."""
        logs = [log for data_path in self._paths(table) for log in _logs(data_path / LOG_DIRECTORY)]
        if not logs:
            return None
        blocks: list[int | None] = [0]
        for log in logs:
            blocks.extend(_added_block(record) for record in log.read_text(errors="replace").splitlines())
        return max(block for block in blocks if block is not None)

    def _paths(self, table: str) -> list[Path]:
        if not self._known.get(table):  # a table not created yet has none: ask again next time
            self._known[table] = self._data_paths(table)
        return self._known[table]

    def _sync_table(self, data_path: Path) -> None:
        logs = _logs(data_path / LOG_DIRECTORY)
        if logs:
            current = logs[-1]
            _fsync(current)
            if current not in self._synced_logs:
                _fsync(current.parent)
                self._synced_logs.add(current)
        _fsync(data_path)


def _logs(directory: Path) -> list[Path]:
    """A table's deduplication logs, oldest first: ClickHouse appends to the last one."""
    if not directory.is_dir():
        return []
    numbered = [
        (int(name.removeprefix(_LOG_PREFIX).removesuffix(_LOG_SUFFIX)), name)
        for name in os.listdir(directory)
        if name.startswith(_LOG_PREFIX) and name.endswith(_LOG_SUFFIX)
    ]
    return [directory / name for _, name in sorted(numbered)]


def _added_block(record: str) -> int | None:
    """The max block number of the part a record says was added; None for another record or
    a line a power cut tore (ClickHouse skips those too)."""
    fields = record.split("\t")
    if len(fields) != 3 or fields[0] != _ADDED:
        return None
    # <partition id>_<min block>_<max block>_<level>[_<mutation>]; the partition ids of these
    # tables (toYYYYMM, "all") hold no "_".
    numbers = fields[1].split("_")
    return int(numbers[2]) if len(numbers) >= 4 and numbers[2].isdigit() else None


def _fsync(path: Path) -> None:
    # fsync through a descriptor of our own: the kernel syncs the file's (or directory's)
    # pages whoever wrote them, here ClickHouse's descriptor in this same process.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
