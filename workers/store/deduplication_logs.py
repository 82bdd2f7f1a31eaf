"""An embedded store's deduplication logs, kept in step with its parts across a power cut or a
kill, so that a batch stored before it is stored once when it comes back, not twice or never.

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

The record comes before the rename, and that instant needs no power cut: a process killed
between the two leaves a record whose part never came to be, and the batch, back under its
id, was dropped as a duplicate of nothing (docs/reliability.md, "The other instant").
``forget_unwritten_blocks`` appends ClickHouse's own DROP record for such a block (the kind it
writes when a part is dropped) before the engine reads the logs of a store opened after an
interruption.

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
_ADDED, _DROPPED = "1", "2"  # a record's operation: a part's block added, or forgotten


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
        paths = [data_path for data_path in self._paths(table) if _logs(data_path / LOG_DIRECTORY)]
        if not paths:
            return None
        blocks: list[int | None] = [0]
        for data_path in paths:
            blocks.extend(_added_block(record) for record in _records(data_path))
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


def _records(data_path: Path) -> list[str]:
    """A table's deduplication records, oldest first, each with its line end (a line a power
    cut tore has none)."""
    logs = _logs(data_path / LOG_DIRECTORY)
    return [line for log in logs for line in log.read_text(errors="replace").splitlines(keepends=True)]


def _added_block(record: str) -> int | None:
    """The max block number of the part a record says was added; None for another record or
    a line a power cut tore (ClickHouse skips those too)."""
    fields = record.split("\t")
    if len(fields) != 3 or fields[0] != _ADDED:
        return None
    blocks = _part_blocks(fields[1])
    return None if blocks is None else blocks[2]


def _part_blocks(name: str) -> tuple[str, int, int] | None:
    """A part's partition and its first and last block, from its name; None for another name
    (a temporary part, a file). <partition id>_<min block>_<max block>_<level>[_<mutation>];
    the partition ids of these tables (toYYYYMM, "all") hold no "_"."""
    fields = name.split("_")
    if len(fields) not in (4, 5) or not all(field.isdigit() for field in fields[1:]):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def forget_unwritten_blocks(store: Path) -> list[str]:
    """In the embedded store at ``store``, which no process has open, append a DROP record for
    each table whose last record adds a block that no part on disk holds: its insert was
    killed between ClickHouse's record and its rename, so the batch, back under its id, would
    be dropped as a duplicate. Returns the parts forgotten, as "table/part"; OSError if a log
    cannot be read or written. Only the last record can be one: the writer inserts one block at
    a time."""
    forgotten = []
    for table in sorted(store.glob("data/*/*")):
        records = _records(table)
        if not records or not records[-1].endswith("\n"):
            continue  # no record, or one a power cut tore, which ClickHouse skips: nothing deduplicates
        fields = records[-1].rstrip("\n").split("\t")
        recorded = _part_blocks(fields[1]) if len(fields) == 3 and fields[0] == _ADDED else None
        if recorded is None:
            continue
        partition, _, block = recorded
        parts = (_part_blocks(entry.name) for entry in table.iterdir() if entry.is_dir())
        if any(part is not None and part[0] == partition and part[1] <= block <= part[2] for part in parts):
            continue
        with open(_logs(table / LOG_DIRECTORY)[-1], "a", encoding="utf-8") as log:
            log.write(f"{_DROPPED}\t{fields[1]}\t{fields[2]}\n")
            log.flush()
            os.fsync(log.fileno())
        forgotten.append(f"{table.name}/{fields[1]}")
    return forgotten


def _fsync(path: Path) -> None:
    # fsync through a descriptor of our own: the kernel syncs the file's (or directory's)
    # pages whoever wrote them, here ClickHouse's descriptor in this same process.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
