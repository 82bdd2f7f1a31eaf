"""Fetch a URL into a file with bounds on its size and on the whole download's time, for the
commands that fetch data files from the internet (``hitstream geoip update``).

A server (or whoever sits between us and it) may send more than any real file, or send it one
byte at a time: a per-read socket timeout alone never ends a download that trickles. So
``download`` refuses an answer that announces more than ``max_bytes`` before reading it, stops
reading once more than that arrived (an answer without Content-Length, or a lying one), and
stops once ``deadline_seconds`` have passed since it started, whatever the server does: the
deadline is checked after every piece received, and each read waits at most
``READ_TIMEOUT_SECONDS`` (or the deadline, if shorter), so a silent server ends it at most
that long after the deadline. Every failure is a ``DownloadFailed`` whose message names what
was exceeded or what went wrong; what was written so far is the caller's to remove.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from pathlib import Path

# The longest one read (connecting, the answer's head, each piece of the body) may wait.
READ_TIMEOUT_SECONDS = 30.0
_PIECE_BYTES = 1 << 20
_MIB = 1 << 20


class DownloadFailed(Exception):
    """The download broke a bound or failed; the message says which and how."""


def download(url: str, destination: Path, max_bytes: int, deadline_seconds: float) -> int:
    """Write what ``url`` serves into ``destination`` and return its size; DownloadFailed when
    the server answers an error, the body is larger than ``max_bytes``, or the download is not
    complete ``deadline_seconds`` after it started."""
    deadline = time.monotonic() + deadline_seconds
    received = 0

    def past_deadline() -> DownloadFailed:
        return DownloadFailed(
            f"not complete within its deadline of {deadline_seconds:g} s ({_size(received)} received)"
        )

    try:
        with (
            urllib.request.urlopen(url, timeout=min(READ_TIMEOUT_SECONDS, deadline_seconds)) as response,
            open(destination, "wb") as out,
        ):
            announced = _content_length(response)
            if announced is not None and announced > max_bytes:
                raise DownloadFailed(
                    f"larger than the download limit of {_size(max_bytes)}: the server announced {_size(announced)}"
                )
            while piece := response.read1(_PIECE_BYTES):
                received += len(piece)
                if received > max_bytes:
                    raise DownloadFailed(
                        f"larger than the download limit of {_size(max_bytes)}: stopped after {_size(received)}"
                    )
                if time.monotonic() > deadline:
                    raise past_deadline()
                out.write(piece)
            if announced is not None and received < announced:
                raise DownloadFailed(f"the connection closed after {_size(received)} of {_size(announced)}")
    except DownloadFailed:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        # A read that timed out at (or after) the deadline: the deadline is what ended it.
        if time.monotonic() >= deadline:
            raise past_deadline() from None
        raise DownloadFailed(str(error)) from None
    return received


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _size(count: int) -> str:
    return f"{count // _MIB} MiB" if count >= _MIB and count % _MIB == 0 else f"{count:,} bytes"
