"""The power-cut harness itself (tests/lazyfs.py): what LazyFS keeps of a file across a cut
and a remount, fsynced or not."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from tests.lazyfs import LazyFS
from tests.procs import wait_until


def write(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        if fsync:
            os.fsync(file.fileno())


def test_a_power_cut_empties_a_file_never_fsynced_and_keeps_a_fsynced_one(lazyfs: Callable[[str], LazyFS]) -> None:
    disk = lazyfs("disk")
    write(disk.mount_dir / "fsynced", b"kept" * 1000, fsync=True)
    write(disk.mount_dir / "unsynced", b"lost" * 1000, fsync=False)
    assert (disk.mount_dir / "unsynced").read_bytes() == b"lost" * 1000  # read back from LazyFS's cache

    disk.power_cut()
    disk.unmount()
    assert not disk.mounted
    disk.mount()

    assert (disk.mount_dir / "fsynced").read_bytes() == b"kept" * 1000
    assert (disk.mount_dir / "unsynced").read_bytes() == b""  # created (metadata is not cached), its bytes gone


def test_an_unmount_drops_unsynced_writes_as_a_cut_does(lazyfs: Callable[[str], LazyFS]) -> None:
    """LazyFS does not write its cache back when unmounted: a test cannot lose a cut's effect
    by unmounting, nor keep unsynced data by skipping the cut."""
    disk = lazyfs("disk")
    write(disk.mount_dir / "unsynced", b"lost" * 1000, fsync=False)

    disk.unmount()
    disk.mount()

    assert (disk.mount_dir / "unsynced").read_bytes() == b""


def test_a_rename_after_a_fsync_survives_a_cut_with_its_bytes(lazyfs: Callable[[str], LazyFS]) -> None:
    """What Redis (AOF manifest) and ClickHouse (parts) do: write a temporary file, fsync,
    rename. Renames are not cached: they reach the disk at once."""
    disk = lazyfs("disk")
    write(disk.mount_dir / "temporary", b"kept" * 1000, fsync=True)
    (disk.mount_dir / "temporary").rename(disk.mount_dir / "final")

    disk.power_cut()
    disk.unmount()
    disk.mount()

    assert sorted(path.name for path in disk.mount_dir.iterdir()) == ["final"]
    assert (disk.mount_dir / "final").read_bytes() == b"kept" * 1000


def test_a_cut_armed_after_a_rename_comes_right_after_it_and_the_disk_mounts_again(
    lazyfs: Callable[[str], LazyFS],
) -> None:
    disk = lazyfs("disk")
    write(disk.mount_dir / "log", b"lost" * 1000, fsync=False)
    write(disk.mount_dir / "temporary", b"kept" * 1000, fsync=True)
    disk.cut_after("rename", "temporary")

    with contextlib.suppress(OSError):  # LazyFS may die before it answers the rename
        (disk.mount_dir / "temporary").rename(disk.mount_dir / "final")
    wait_until(disk.cut_happened, 10, "LazyFS to cut after the rename")
    assert disk.mounted  # dead, still in the mount table
    disk.unmount()
    disk.mount()

    assert (disk.mount_dir / "final").read_bytes() == b"kept" * 1000
    assert (disk.mount_dir / "log").read_bytes() == b""
