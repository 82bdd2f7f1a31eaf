"""``hitstream queue --watch``: the figures redrawn after every rate interval until Ctrl-C, as
plain text when the output is no terminal (each sample below the last, no escape sequences)
and redrawn in place on a terminal (a pseudo-terminal here); ``--json`` stays one document."""

from __future__ import annotations

import os
import pty
import queue
import select
import signal
import subprocess
import threading
import time

import redis
from click.testing import CliRunner

from hitstream.main import cli
from shared import keys
from tests.procs import HITSTREAM, Commands


def watch(commands: Commands, env: dict[str, str], **popen: object) -> subprocess.Popen[bytes]:
    return commands.start([HITSTREAM, "queue", "--watch", "--rate-interval", "0.2"], env=env, **popen)


def test_piped_watch_prints_each_sample_as_plain_text_and_stops_on_ctrl_c(
    commands: Commands, hitstream_env: dict[str, str], real_redis: redis.Redis
) -> None:
    process = watch(commands, hitstream_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.decode())
            lines.put(line.decode())

    threading.Thread(target=read, daemon=True).start()

    def next_depth() -> int:
        """The live lane's depth in the next sample."""
        while not lines.get(timeout=20).startswith("live lane"):
            pass
        return int(lines.get(timeout=20).split()[-1])

    assert next_depth() == 0
    for _ in range(5):
        real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: b"{}"})
    deadline = time.monotonic() + 20
    while next_depth() != 5:
        assert time.monotonic() < deadline
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0
    text = "".join(output)
    assert text.count("hitstream queue at ") >= 2
    assert "added/s            " in text and "redis AOF            on" in text
    assert "waiting for the store writer (enriched)\n  batches            0\n  pageviews          0\n" in text
    assert "\x1b" not in text


def test_watch_on_a_terminal_redraws_in_place(commands: Commands, hitstream_env: dict[str, str]) -> None:
    controller, terminal = pty.openpty()
    process = watch(commands, hitstream_env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    drawn = b""
    deadline = time.monotonic() + 20
    while drawn.count(b"hitstream queue at ") < 3 and time.monotonic() < deadline:
        if select.select([controller], [], [], 0.5)[0]:
            try:
                drawn += os.read(controller, 65536)
            except OSError:
                break
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0
    os.close(controller)
    assert drawn.count(b"hitstream queue at ") >= 3
    assert b"live lane" in drawn and b"bulk lane" in drawn
    # Each redraw moves the cursor back up over the last one (ESC [ n A) instead of scrolling.
    assert b"\x1b[1A" in drawn or b"\x1b[2K" in drawn


def test_watch_refuses_json_and_a_zero_interval_in_one_line(hitstream_env: dict[str, str]) -> None:
    with_json = CliRunner().invoke(cli, ["queue", "--watch", "--json"])
    no_interval = CliRunner().invoke(cli, ["queue", "--watch", "--rate-interval", "0"])
    assert (with_json.exit_code, no_interval.exit_code) == (2, 2)
    assert "--watch" in with_json.output and "--json" in with_json.output
    assert "--rate-interval" in no_interval.output
    assert len(with_json.output.strip().splitlines()) == len(no_interval.output.strip().splitlines()) == 1
