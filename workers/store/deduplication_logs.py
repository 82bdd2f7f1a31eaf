"""fsync an embedded store's deduplication logs, so a power cut cannot keep a batch's rows and
forget that they were stored.

A non-replicated MergeTree table remembers the insert_deduplication_token of its last blocks
in ``<table data path>/deduplication_logs/deduplication_log_N.txt``. ClickHouse appends a
block's record there and renames the block's part into place (fsynced, with the tables'
DURABLE_INSERT_SETTINGS), but it fsyncs the log only when it starts a new file, every
2 x DEDUPLICATION_WINDOW records (MergeTreeDeduplicationLog::addPart flushes to the OS and no
further). A power cut between an insert and the batch's acknowledgement then left the part and
lost its record: the batch, re-claimed under the same id, was stored a second time. So the
store writer fsyncs the current log of each table it inserted into before it reports the batch
stored; the table's directory too, where the part's rename is (ClickHouse fsyncs the part's
own directory, not the one holding its name), and the log directory when the log is a new file.

Only an embedded store (``chdb://PATH``) has its files in this process's reach; a ClickHouse
server's residual window is in docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

LOG_DIRECTORY = "deduplication_logs"
_LOG_PREFIX = "deduplication_log_"
_LOG_SUFFIX = ".txt"


class DeduplicationLogs:
    """fsyncs the deduplication logs of an embedded store's tables.

    ``data_paths`` answers a table's data directories (system.tables.data_paths); they are
    asked once per table and kept, and asked again after a sync failed (a table dropped and
    created again has a new directory)."""

    def __init__(self, data_paths: Callable[[str], list[Path]]) -> None:
        self._data_paths = data_paths
        self._known: dict[str, list[Path]] = {}
        self._synced_logs: set[Path] = set()  # log files whose directory entry was fsynced

    def sync(self, tables: Iterable[str]) -> None:
        """fsync what the inserts into ``tables`` wrote and ClickHouse left unsynced. Raises
        OSError if a file cannot be synced."""
        try:
            for table in tables:
                if table not in self._known:
                    self._known[table] = self._data_paths(table)
                for data_path in self._known[table]:
                    self._sync_table(data_path)
        except OSError:
            self._known.clear()
            raise

    def _sync_table(self, data_path: Path) -> None:
        logs = data_path / LOG_DIRECTORY
        current = _current_log(logs)
        if current is not None:
            _fsync(current)
            if current not in self._synced_logs:
                _fsync(logs)
                self._synced_logs.add(current)
        _fsync(data_path)


def _current_log(logs: Path) -> Path | None:
    """The deduplication log ClickHouse appends to: the highest-numbered one (None: none yet)."""
    numbered = [
        (int(name.removeprefix(_LOG_PREFIX).removesuffix(_LOG_SUFFIX)), name)
        for name in os.listdir(logs)
        if name.startswith(_LOG_PREFIX) and name.endswith(_LOG_SUFFIX)
    ]
    return logs / max(numbered)[1] if numbered else None


def _fsync(path: Path) -> None:
    # fsync through a descriptor of our own: the kernel syncs the file's (or directory's)
    # pages whoever wrote them, here ClickHouse's descriptor in this same process.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
