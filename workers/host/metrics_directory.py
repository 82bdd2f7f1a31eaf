"""The directory where one ``hitstream worker``'s processes keep their metrics (prometheus-client's
multiprocess files, ~190 kB a command): made at start, removed at exit, and swept when its
owner died without removing it (SIGKILL, a crash, a power cut).

Each directory is ``$TMPDIR/hitstream-worker-metrics-<owner pid>-<random>`` and holds
``owner.lock``, on which the owner holds an exclusive flock for its whole life; the kernel
drops that lock when the owner exits, however it exits. So a start sweeps every directory of
this user whose lock it can take: the pid in the name only tells an operator whose it was, and
a pid reused by another process since then does not keep a directory alive. The lock file is
locked under another name first and renamed into place, so a sweep never takes the lock of an
owner that has not locked it yet; a directory without one (an owner between making and locking
it) is swept only when its pid is gone.

Directories of the earlier naming (``hitstream-worker-metrics-<random>``, no pid, no lock) are
left alone: nothing tells a live one from a dead one. Remove them by hand once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

log = logging.getLogger(__name__)

PREFIX = "hitstream-worker-metrics-"
LOCK_NAME = "owner.lock"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-[a-z0-9_]+")


@dataclass(frozen=True)
class MetricsDirectory:
    """A directory this process made and owns (its lock held on ``lock``, a descriptor)."""

    path: str
    lock: int

    def remove(self) -> None:
        """Remove the directory, then give up its lock (in that order: a sweep that takes the
        lock finds nothing left to remove)."""
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self.lock)


def make_directory() -> MetricsDirectory:
    """A new directory under ``tempfile.gettempdir()`` (TMPDIR), named with this process's
    pid and locked by it."""
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    try:
        staged = os.path.join(path, LOCK_NAME + ".new")
        lock = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
            os.rename(staged, os.path.join(path, LOCK_NAME))
        except BaseException:
            os.close(lock)
            raise
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return MetricsDirectory(path, lock)


def sweep_directories() -> list[str]:
    """Remove the directories under ``tempfile.gettempdir()`` whose owners are gone; return
    their names."""
    parent = tempfile.gettempdir()
    swept = []
    with os.scandir(parent) as entries:
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid == os.getuid() and _remove_if_abandoned(
                entry.path, int(match[1])
            ):
                swept.append(entry.name)
    if swept:
        log.info("removed %d metrics directories of worker commands that are gone: %s", len(swept), ", ".join(swept))
    return swept


def _remove_if_abandoned(path: str, pid: int) -> bool:
    try:
        lock = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY)
    except FileNotFoundError:
        # Not locked yet: its owner is making it, unless that process is gone.
        if _alive(pid):
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its owner runs
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
