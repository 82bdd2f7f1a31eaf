"""Files a running process reads again once they are replaced: the GeoIP databases
(workers.pipeline.geo) and the crawler ranges (shared.crawlers.verification).

Their updaters (``hitstream geoip update``, ``hitstream crawlers update``, a ``geoipupdate``
cron job) rename a new file over the old one, so a file is known by its identity: device,
inode, size and modification time. Readers compare it at most once every
FILE_CHECK_SECONDS, one ``stat`` per file and check, never one per event.
"""

from __future__ import annotations

import os
from pathlib import Path

# How often a reader compares its file's identity with the one it read.
FILE_CHECK_SECONDS = 10.0

FileIdentity = tuple[int, int, int, int]  # device, inode, size, modification time (ns)
NEVER_READ: FileIdentity = (-1, -1, -1, -1)  # no file has it: the first comparison always differs


def file_identity(path: Path) -> FileIdentity | None:
    """``path``'s identity now; None when it does not exist (or cannot be looked at)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns
