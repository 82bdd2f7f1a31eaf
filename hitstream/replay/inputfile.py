"""The input file: opened transparently when gzip-compressed, identified by its content, and
the source of each line's deterministic page_id."""

from __future__ import annotations

import gzip
import hashlib
import uuid
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
IDENTITY_PREFIX_BYTES = 64 * 1024
# Fixed namespace for replay page ids: the same file and line always give the same page_id,
# so a line re-sent after a crash is the same pageview to the server.
PAGE_ID_NAMESPACE = uuid.UUID("6f1d3c9e-4a57-5b8e-9d0a-2c7e1b4f8a63")


def open_binary(path: Path) -> BinaryIO:
    """The file's (decompressed) bytes; gzip is recognised by its magic number, not its name."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    if compressed:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def file_identity(path: Path) -> str:
    """sha256 of the first 64 KiB and the size: cheap, and changes when the file is replaced."""
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(IDENTITY_PREFIX_BYTES)
    return f"{hashlib.sha256(prefix).hexdigest()}:{size}"


def count_lines(path: Path) -> int:
    """Lines in the (decompressed) file, counting a last line without a newline."""
    lines = 0
    last = b"\n"
    with open_binary(path) as file:
        while chunk := file.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def page_id_for(identity: str, line: int) -> str:
    return str(uuid.uuid5(PAGE_ID_NAMESPACE, f"{identity}:{line}"))
