"""Power cuts for tests: LazyFS (tests/vendor/lazyfs/) mounted over a directory.

LazyFS keeps every write in its own page cache until the writer fsyncs it; ``power_cut()``
makes it drop everything not fsynced, which is what a machine losing power does to the
files of the processes running on it. A test kills those processes (SIGKILL: nothing they
hold in memory survives a power cut either), cuts the power of every mount, unmounts,
mounts again and restarts them on what survived. ``cut_after`` cuts at a precise moment
instead: right after a given file operation.

``lazyfs`` (registered for the whole suite by tests/conftest.py) mounts one such directory
per call; every mount is unmounted after the test. FUSE needs /dev/fuse and root: elsewhere
the tests using it skip, saying so; CI runs as root with Debian's fuse3 installed (.ci/run).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import wait_until

WRAPPER = Path(__file__).with_name("vendor") / "lazyfs" / "lazyfs"
CUT_DONE = b"finished::clear-cache\n"
# What LazyFS logs once it took a crash fault, and once it answered lazyfs::help.
ARMED = "received: VALID crash fault"
HELP = "help: 'lazyfs::help'"
SECONDS = 30.0


def fuse_unavailable() -> str | None:
    """Why FUSE cannot work on this machine, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "LazyFS needs FUSE and this machine has no /dev/fuse"
    if os.geteuid() != 0:
        return "LazyFS mounts with allow_other, which needs root; these tests run as an ordinary user"
    return None


class LazyFS:
    """LazyFS over ``mount_dir``; the files that reached the disk live in ``root_dir``. Its
    fault FIFOs and log are in ``work_dir``."""

    def __init__(self, mount_dir: Path, work_dir: Path) -> None:
        self.mount_dir = mount_dir
        self.root_dir = work_dir / "disk"
        self.log = work_dir / "lazyfs.log"
        self._faults = work_dir / "faults.fifo"
        self._done = work_dir / "done.fifo"
        self.process: subprocess.Popen[bytes] | None = None
        work_dir.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self._faults)
        os.mkfifo(self._done)
        # Opened read-write, this end never blocks and never reads an end of file: LazyFS opens
        # the other end (write-only) once per mount, and we wait for its answers with select.
        self._done_fd = os.open(self._done, os.O_RDWR | os.O_NONBLOCK)

    @property
    def mounted(self) -> bool:
        """In the mount table (also a mount whose LazyFS died: its calls fail until unmounted)."""
        mount_point = str(self.mount_dir).encode()
        with open("/proc/self/mounts", "rb") as mounts:
            return any(line.split(b" ")[1] == mount_point for line in mounts)

    def mount(self) -> None:
        """Start LazyFS in the background; return once the mount is in place."""
        assert self.process is None, "already mounted"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(WRAPPER), str(self.mount_dir), str(self.root_dir), str(self._faults), str(self._done)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        wait_until(lambda: self._alive() and self.mounted, SECONDS, f"LazyFS to mount {self.mount_dir}")

    def power_cut(self) -> None:
        """Drop every write not yet fsynced; return once LazyFS says it has."""
        self._command("lazyfs::clear-cache")
        answer = b""
        deadline = time.monotonic() + SECONDS
        while not answer.endswith(CUT_DONE):
            self._alive()
            assert time.monotonic() < deadline, f"LazyFS did not finish its clear-cache:\n{self.output()}"
            if select.select([self._done_fd], [], [], 0.1)[0]:
                answer += os.read(self._done_fd, 4096)
        assert answer == CUT_DONE, answer

    def cut_after(self, operation: str, path_pattern: str) -> None:
        """Arm a cut at a precise moment: right after the next ``operation`` (rename, write,
        fsync, ...) on a path matching ``path_pattern`` (a regular expression), LazyFS drops
        every unsynced write and dies; the mount then fails every call (ENOTCONN) until it
        is unmounted and mounted again. ``cut_happened`` says when."""
        # LazyFS's fault thread reads its commands one at a time and logs each; it registers
        # the fault after logging it, so the answer to a second command proves it is armed.
        self._command(f"lazyfs::crash::timing=after::op={operation}::from_rgx={path_pattern}", ARMED)
        # A matching operation right after arming fires the cut before the second answer:
        # then LazyFS has exited, which is the cut itself.
        self._command("lazyfs::help", HELP, unless_cut=True)

    def cut_happened(self) -> bool:
        assert self.process is not None, "not mounted"
        return self.process.poll() is not None

    def _command(self, command: str, logged: str | None = None, unless_cut: bool = False) -> None:
        """Send ``command``; with ``logged``, return once LazyFS logged that line once more.
        ``unless_cut``: also return once an armed cut has made LazyFS exit."""
        assert self.process is not None, "not mounted"
        before = self.output().count(logged) if logged else 0
        cut = self.cut_happened if unless_cut else lambda: False
        # LazyFS holds the faults FIFO open from its start: this open does not block, and
        # fails (ENXIO) only if LazyFS is not there to read it.
        wait_until(lambda: cut() or self._listening(), SECONDS, "LazyFS to open its faults FIFO")
        try:
            fd = os.open(self._faults, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if cut():
                return
            raise
        try:
            os.write(fd, f"{command}\n".encode())
        finally:
            os.close(fd)
        if logged:
            wait_until(
                lambda: cut() or (self._alive() and self.output().count(logged) > before),
                SECONDS,
                f"LazyFS to log {logged}",
            )

    def unmount(self) -> None:
        """Unmount (the processes using it must have stopped) and wait for LazyFS to exit."""
        assert self.process is not None, "not mounted"
        subprocess.run(["fusermount3", "-u", str(self.mount_dir)], check=True, capture_output=True)
        self.process.wait(SECONDS)
        self.process = None

    def close(self) -> None:
        """After the test: unmount whatever the test left (busy mounts too), close the FIFO."""
        if self.process is not None:
            if self.mounted:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mount_dir)], capture_output=True)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        os.close(self._done_fd)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _alive(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"LazyFS exited:\n{self.output()}"
        return True

    def _listening(self) -> bool:
        self._alive()
        try:
            os.close(os.open(self._faults, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return False
        return True


@pytest.fixture
def lazyfs(tmp_path: Path) -> Iterator[Callable[[str], LazyFS]]:
    """``lazyfs(name)``: LazyFS mounted over ``tmp_path / name`` (its disk and FIFOs in
    ``tmp_path / "lazyfs-<name>"``); every mount is undone after the test."""
    if reason := fuse_unavailable():
        pytest.skip(reason)
    mounts: list[LazyFS] = []

    def mount(name: str) -> LazyFS:
        mounted = LazyFS(tmp_path / name, tmp_path / f"lazyfs-{name}")
        mounts.append(mounted)
        mounted.mount()
        return mounted

    yield mount
    for mounted in mounts:
        mounted.close()
