"""``hitstream up`` end to end: a fresh directory, no Redis running, one command.

Each test runs the real command in a temporary working directory, uses the curl and stats
commands it prints, and stops it the way a terminal's Ctrl-C does: SIGINT to its whole
foreground process group.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
import redis

from hitstream.redis_server import redis_answers
from hitstream.up import own_socket
from shared import keys
from shared.config import DEFAULT_REDIS_URL
from tests.geoip_fixtures import build_city_db
from tests.ports import free_port
from tests.procs import HELD_CTRL_C, HITSTREAM, Commands, wait_until

START_SECONDS = 90.0


class Up:
    """A running ``hitstream up`` whose output is read line by line in the background."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        self.port = port
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [HITSTREAM, "up", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group, like a shell job, so Ctrl-C can be sent to the group.
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def printed(self, start: str) -> str:
        """The next output line starting with ``start`` (after indentation)."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5).strip()
            except queue.Empty:
                assert self.process.poll() is None, "hitstream up exited:\n" + "".join(self.output)
                continue
            if line.startswith(start):
                return line
        raise AssertionError(f"no line starting with {start!r}:\n" + "".join(self.output))

    def processes(self) -> list[psutil.Process]:
        """Every process this ``up`` started, at any depth."""
        return psutil.Process(self.process.pid).children(recursive=True)

    def child(self, sub_command: str) -> psutil.Process:
        (match,) = [p for p in psutil.Process(self.process.pid).children() if sub_command in p.cmdline()]
        return match

    def ctrl_c(self, timeout: float = 60.0) -> int:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        for process in [*self.processes(), psutil.Process(self.process.pid)]:
            process.kill()
        self.process.wait()


@pytest.fixture
def up_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No HITSTREAM_* settings but a Redis URL on a free port where nothing listens yet, and
    a test City database (so ``up`` fetches none: tests/test_up_geoip.py covers that)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HITSTREAM_")}
    env["HITSTREAM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["HITSTREAM_GEOIP_CITY_DB"] = str(build_city_db(tmp_path_factory.mktemp("geoip") / "city.mmdb"))
    return env


def up_starter(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[[], Up]]:
    """A fixture's body: starts ``hitstream up`` on demand, kills what still runs at the end."""
    started: list[Up] = []

    def start() -> Up:
        up = Up(tmp_path, env, free_port())
        started.append(up)
        return up

    yield start
    for up in started:
        if up.process.poll() is None:
            up.kill()


@pytest.fixture
def start_up(tmp_path: Path, up_env: dict[str, str]) -> Iterator[Callable[[], Up]]:
    yield from up_starter(tmp_path, up_env)


def send(curl_line: str, count: int = 1) -> list[int]:
    """POST the pageview of a printed curl command ``count`` times; the status codes."""
    words = shlex.split(curl_line)
    url = next(word for word in words if word.startswith("http://"))
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    body = orjson.loads(words[words.index("-d") + 1])
    with httpx.Client(headers=headers, timeout=5) as client:
        return [client.post(url, json={**body, "url": f"{body['url']}&n={n}"}).status_code for n in range(count)]


def bearer(curl_line: str) -> str:
    words = shlex.split(curl_line)
    return next(word for word in words if word.startswith("Authorization: Bearer "))


def stats(stats_line: str, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a printed ``hitstream stats`` command (with its VAR=value prefix) in a new shell env."""
    words = shlex.split(stats_line)
    assignments = dict(word.split("=", 1) for word in words if "=" in word and word.startswith("HITSTREAM_"))
    argv = [word for word in words if word.split("=", 1)[0] not in assignments]
    shell_env = {name: value for name, value in env.items() if not name.startswith("HITSTREAM_")}
    # Its --wait (2 s by default, for an operator) is not what these tests check: a loaded
    # machine may take longer to answer.
    result = subprocess.run(
        [HITSTREAM, *argv[1:], "--wait", "20"],
        cwd=cwd,
        env={**shell_env, **assignments},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def stored_pageviews(expected: int, stats_line: str, cwd: Path, env: dict[str, str]) -> int:
    """What the printed stats command counts once it counts ``expected`` pageviews or more
    (the worker stores them when it gets to them)."""
    counts: list[int] = []

    def counted() -> bool:
        counts.append(stats(stats_line, cwd, env)["pageviews"])
        return counts[-1] >= expected

    wait_until(counted, START_SECONDS, f"{expected} pageviews to be stored", interval=0.2)
    return counts[-1]


def pending_signals(pid: int) -> set[signal.Signals]:
    """The signals sent to a process that it has not handled yet (held while it is stopped)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("ShdPnd:")), 16)
    return {signum for signum in signal.Signals if mask >> (signum - 1) & 1}


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes that have not exited (a zombie has, only its parent has not reaped it)."""
    return [process for process in processes if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]


def test_up_starts_everything_serves_the_printed_curl_and_stops_cleanly(
    start_up: Callable[[], Up], tmp_path: Path, up_env: dict[str, str]
) -> None:
    up = start_up()
    curl = up.printed("curl ")
    stats_line = up.printed("HITSTREAM_REDIS_URL=")
    assert stats_line.endswith("hitstream stats --site demo.localhost --json")
    token_file = tmp_path / "var" / "demo-token"
    assert token_file.stat().st_mode & 0o777 == 0o600

    started = up.processes()
    names = {" ".join(process.cmdline()) for process in started}
    assert any("redis-server" in name or "valkey" in name for name in names)
    assert any(name.endswith(f" api --host 127.0.0.1 --port {up.port}") for name in names)
    # One enricher per core (at most 4) and, on the embedded store, the writer, under one supervisor.
    enrichers = min(os.cpu_count() or 1, 4)
    assert any(name.endswith(f" worker --processes {enrichers}") for name in names)
    assert sum("multiprocessing.spawn" in name for name in names) == (enrichers + 1 if enrichers > 1 else 0)

    assert send(curl) == [202]
    # Read by a separate process while the worker owns the embedded store.
    assert stored_pageviews(1, stats_line, tmp_path, up_env) == 1

    assert up.ctrl_c() == 0
    assert still_running(started) == []
    # Redis was stopped by up after the worker (SIGTERM), not by the terminal's SIGINT.
    redis_log = (tmp_path / "var" / "redis" / "redis.log").read_text()
    assert "Received SIGTERM" in redis_log
    assert "Received SIGINT" not in redis_log

    again = start_up()
    assert bearer(again.printed("curl ")) == bearer(curl)  # the kept demo token
    assert stats(again.printed("HITSTREAM_REDIS_URL="), tmp_path, up_env)["pageviews"] == 1
    assert again.ctrl_c() == 0


def test_pageviews_queued_at_ctrl_c_are_stored_by_the_next_up(
    start_up: Callable[[], Up], tmp_path: Path, up_env: dict[str, str]
) -> None:
    up = start_up()
    curl = up.printed("curl ")
    worker = up.child("worker")
    # Hold the worker so the pageviews are accepted but certainly not processed yet.
    os.killpg(worker.pid, signal.SIGSTOP)
    assert send(curl, count=50) == [202] * 50
    client = redis.Redis.from_url(up_env["HITSTREAM_REDIS_URL"])
    assert client.xlen(keys.STREAM) == 50
    client.close()

    os.killpg(up.process.pid, signal.SIGINT)
    # Ctrl-C arrives while all 50 wait: up stops the API, then sends the held worker its
    # SIGTERM, which stays pending until the worker runs again and shuts down warm.
    wait_until(lambda: signal.SIGTERM in pending_signals(worker.pid), 60, "up to send the worker its SIGTERM")
    os.killpg(worker.pid, signal.SIGCONT)
    assert up.process.wait(60) == 0

    again = start_up()
    stats_line = again.printed("HITSTREAM_REDIS_URL=")
    assert stored_pageviews(50, stats_line, tmp_path, up_env) == 50
    assert again.ctrl_c() == 0


def test_a_ctrl_c_that_came_while_up_loaded_stops_it_before_it_serves_and_leaves_nothing_running(
    commands: Commands, tmp_path: Path, up_env: dict[str, str]
) -> None:
    ended = commands.run(
        [sys.executable, "-c", HELD_CTRL_C, HITSTREAM, "up", "--port", str(free_port())],
        cwd=tmp_path,
        env=up_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert ended.returncode == 0, ended.stderr
    assert "hitstream is up" not in ended.stdout and "Traceback" not in ended.stderr, ended.stdout + ended.stderr
    # It stops between its steps; whatever it had started is stopped, its Redis included.
    assert not redis_answers(up_env["HITSTREAM_REDIS_URL"])


def test_up_stops_everything_and_fails_when_a_child_dies(start_up: Callable[[], Up]) -> None:
    up = start_up()
    up.printed("curl ")
    started = up.processes()
    up.child("api").kill()
    assert up.process.wait(60) == 1
    assert "api exited unexpectedly" in "".join(up.output)
    assert still_running(started) == []


@pytest.fixture
def start_up_at_the_default_redis_address(tmp_path: Path, up_env: dict[str, str]) -> Iterator[Callable[[], Up]]:
    """``start_up`` without HITSTREAM_REDIS_URL: up looks for Redis at the default address."""
    yield from up_starter(tmp_path, without_redis_url(up_env))


def without_redis_url(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != "HITSTREAM_REDIS_URL"}


def test_up_beside_a_redis_without_aof_at_the_default_address_runs_its_own_and_leaves_that_one_alone(
    start_up_at_the_default_redis_address: Callable[[], Up], tmp_path: Path, up_env: dict[str, str]
) -> None:
    """This machine kind pre-starts a Redis on 6379 that keeps nothing on disk: up must neither
    refuse every pageview nor promise less, nor change a Redis it did not start."""
    default = redis.Redis.from_url(DEFAULT_REDIS_URL, socket_timeout=1)
    try:
        before = default.config_get("append*")
    except redis.ConnectionError:
        pytest.skip("no Redis answers at the default address on this machine")
    if (before["appendonly"], before["appendfsync"]) == ("yes", "always"):
        pytest.skip("the Redis at the default address already fsyncs every write")
    up = start_up_at_the_default_redis_address()
    curl = up.printed("curl ")
    stats_line = up.printed("HITSTREAM_REDIS_URL=")
    own = f"unix://{own_socket(tmp_path / 'var' / 'redis')}?db=0"
    assert stats_line.startswith(f"HITSTREAM_REDIS_URL={shlex.quote(own)} ")
    assert send(curl, count=3) == [202] * 3
    assert stored_pageviews(3, stats_line, tmp_path, without_redis_url(up_env)) == 3
    assert up.ctrl_c() == 0
    assert "not using the Redis at redis://127.0.0.1:6379/0" in "".join(up.output)
    assert default.config_get("append*") == before
    default.close()
