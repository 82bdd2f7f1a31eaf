"""Random (version 4) UUIDs for pageviews that arrive without ``page_id`` or ``session_id``.

The OS's random bytes are read 4 KiB at a time: one ``getrandom`` system call per 256 ids
instead of one per id (under load in this VM the call cost more than the rest of the id).
A forked child forgets the unread bytes it inherited, so parent and child never hand out the
same id.
"""

from __future__ import annotations

import os

_POOL_BYTES = 4096
_pool = b""
_next = 0  # offset of the first unused byte in _pool


def new_uuid4() -> str:
    """A random UUID string (the uuid module's object costs 4x as much)."""
    global _pool, _next
    if _next == len(_pool):
        _pool, _next = os.urandom(_POOL_BYTES), 0
    raw = bytearray(_pool[_next : _next + 16])
    _next += 16
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _forget_inherited_pool() -> None:
    global _pool, _next
    _pool, _next = b"", 0


os.register_at_fork(after_in_child=_forget_inherited_pool)
