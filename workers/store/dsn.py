"""Reading a store DSN: ``chdb://PATH`` (embedded engine on disk) or ``http(s)://HOST:8123[/db]``.

Everything after ``chdb://`` is a filesystem path, relative to the current directory unless
absolute (``chdb://./var/chdb``, ``chdb:///srv/hitstream/chdb``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

CHDB_SCHEME = "chdb://"


def chdb_path(dsn: str) -> Path | None:
    """The absolute directory of a chdb DSN, or None for a server DSN."""
    if not dsn.startswith(CHDB_SCHEME):
        return None
    location = dsn.removeprefix(CHDB_SCHEME)
    if not location:
        raise ValueError(f"store DSN {dsn!r} has no path after chdb://")
    return Path(location).expanduser().resolve()


def chdb_path_in_use(path: Path) -> bool:
    """True when another process has the embedded engine at ``path`` open.

    The engine holds an exclusive flock on ``<path>/status`` while it runs (and deletes the
    file on a clean shutdown), so probing that lock answers without starting an engine.
    """
    try:
        descriptor = os.open(path / "status", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # also releases the probe's own lock
    return False

