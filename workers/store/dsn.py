"""Reading a store DSN: ``chdb://PATH`` (embedded engine on disk) or ``http(s)://HOST:8123[/db]``,
and the locks that say who has an embedded store open.

Everything after ``chdb://`` is a filesystem path, relative to the current directory unless
absolute (``chdb://./var/chdb``, ``chdb:///srv/hitstream/chdb``).
"""

from __future__ import annotations

import fcntl
import os
import time
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


def in_use_message(path: Path) -> str:
    """What a reader is told while another process has the embedded engine at ``path`` open."""
    return f"the chdb store at {path} is open in another process (only one process may open it)"


# The worker that owns an embedded store holds an exclusive flock on this file, inside the
# store's directory, for its whole life. It is not chdb's own ``status`` lock: that one is
# also held for a moment by ``hitstream migrate`` or ``hitstream stats`` (then the store is
# only busy, and a worker waits for it), while this one means another worker writes here.
OWNER_LOCK_FILE = "hitstream-worker.lock"


# ``store_owner`` probes the owner lock with a shared lock for a moment; a worker that meets
# that probe tries again (for at most 0.2 s of probes in a row) instead of taking the prober
# for an owner.
OWNER_LOCK_ATTEMPTS = 100
OWNER_LOCK_RETRY_SECONDS = 0.002


class StoreOwned(Exception):
    """Another worker process owns the embedded store."""


def own_chdb_path(path: Path) -> int:
    """Make this process the one worker of the embedded store at ``path``: take the owner lock
    and write our pid into it. Returns the lock's descriptor, which must stay open as long as
    the process works. Raises StoreOwned, naming the owner's pid, if another process has it.

    flock is atomic, so of two workers starting together exactly one wins; the kernel drops
    the lock when its process exits, however it exits (SIGKILL included).
    """
    path.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path / OWNER_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(OWNER_LOCK_ATTEMPTS):
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt + 1 < OWNER_LOCK_ATTEMPTS and _only_probed(descriptor):
                time.sleep(OWNER_LOCK_RETRY_SECONDS)
                continue
            owner = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise StoreOwned(
                f"the chdb store at {path} is owned by another hitstream worker (pid {owner}); an embedded store"
                " takes exactly one worker: stop that one first, or use a ClickHouse server (http://host:8123) for more"
            ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def _only_probed(descriptor: int) -> bool:
    """True when the owner lock we could not take is held shared (a ``store_owner`` probe), not
    by a worker: then a shared lock of our own succeeds (and is released at once)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    return True


def store_owner(path: Path) -> int | None:
    """The pid of the hitstream worker that owns the embedded store at ``path`` (0 when its pid
    is not written yet), or None when no worker owns it. The owner holds its lock from before
    it opens the store until after it closed it, so, unlike the engine's own lock, it also
    covers a worker that is starting or stopping."""
    try:
        descriptor = os.open(path / OWNER_LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        written = os.read(descriptor, 32).decode(errors="replace").strip()
        return int(written) if written.isdigit() else 0
    finally:
        os.close(descriptor)  # also releases the probe's own lock
    return None
