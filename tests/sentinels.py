"""Redis Sentinel for real, for tests: a primary, a replica and three sentinels on this machine
(``redis-server --sentinel``, quorum 2), each on a free port.

``sentinel_group`` starts them and waits until the group can fail over: the replica holds the
primary's data and every sentinel knows the replica and the other sentinels. With a
``Relay`` (tests.relay) on the replication link the replica can be made to lag for real.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.sentinel

from hitstream.redis_server import RedisServer, server_binary
from tests.ports import free_port
from tests.procs import wait_until
from tests.relay import Relay

SERVICE = "mymaster"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000  # how long the primary must be silent before a sentinel calls it down
# A primary starts a replica's full sync at once, not after waiting 5 s for more replicas.
SYNC_AT_ONCE = ("--repl-diskless-sync-delay", "0")


@dataclass
class Sentinel:
    """``redis-server CONFIG --sentinel`` on a free port (Sentinel rewrites its config file)."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, directory: Path, primary_port: int, failover_timeout_ms: int) -> Sentinel:
        port = free_port()
        directory.mkdir(parents=True)
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        process = subprocess.Popen(
            [server_binary(), str(config), "--sentinel"], stdin=subprocess.DEVNULL, start_new_session=True
        )
        return cls(port, process, directory / "sentinel.log")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class Group:
    primary: RedisServer
    replica: RedisServer
    sentinels: list[Sentinel]
    relay: Relay | None = None  # on the replication link, when the group was started with one

    @property
    def url(self) -> str:
        addresses = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{addresses}/{SERVICE}/0"

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel names it (the promoted replica's as soon as
        it is promoted, while that sentinel's failover still runs)."""
        address = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def found_primary_port(self) -> int | None:
        """The primary's port as every hitstream client finds it (redis-py takes the first
        sentinel's primary that it does not consider down; while failovers run none may
        qualify: None)."""
        sentinels = redis.sentinel.Sentinel(
            [("127.0.0.1", sentinel.port) for sentinel in self.sentinels], socket_timeout=1
        )
        try:
            return int(sentinels.discover_master(SERVICE)[1])
        except redis.sentinel.MasterNotFoundError:
            return None

    def settled(self) -> bool:
        """The replica holds the primary's data (a replica promoted before its first sync
        completes is empty: every token gone, 401 for all) and every sentinel knows the replica
        and the other sentinels (else a failover stalls)."""
        try:
            if redis.Redis(port=self.replica.port).info("replication")["master_link_status"] != "up":
                return False
            for sentinel in self.sentinels:
                state = sentinel.client().sentinel_master(SERVICE)
                if state["num-other-sentinels"] < SENTINELS - 1 or state["num-slaves"] < 1:
                    return False
        except redis.RedisError:
            return False
        return True

    def restart_primary_as_replica(self) -> None:
        """Start the killed primary again (its port and files) as a replica of the promoted
        one, as a sentinel would make it once it is back (sooner: without waiting for that).

        Never to be promoted (``replica-priority 0``): until its first sync it holds its own
        AOF, with what the promoted one never got. A sentinel that misses the promoted one's
        answers for ``DOWN_AFTER_MS`` (a busy machine) fails over again, and the other
        sentinels' "down" replies from the failover just ended still count towards its quorum
        for seconds: without this it would promote the unsynced old primary and make the
        promoted one its replica, which then never gets a replica of its own."""
        self.primary = RedisServer(
            port=self.primary.port,
            data_dir=self.primary.data_dir,
            extra=(*SYNC_AT_ONCE, "--replica-priority", "0", "--replicaof", "127.0.0.1", str(self.replica.port)),
        )
        self.primary.start()

    def explain(self) -> str:
        """Each server's role and the tail of every log: what a failed wait on the group says."""
        parts = []
        for name, server in (("primary", self.primary), ("replica", self.replica)):
            try:
                role = str(redis.Redis(port=server.port, socket_timeout=1).info("replication"))
            except redis.RedisError as error:
                role = f"no answer: {error}"
            parts.append(f"--- {name} (port {server.port}) INFO replication: {role}")
            parts.append(log_tail(server.data_dir / "redis.log"))
        for number, sentinel in enumerate(self.sentinels):
            parts.append(f"--- sentinel-{number} (port {sentinel.port})")
            parts.append(log_tail(sentinel.log))
        return "\n".join(parts)


def log_tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else f"(no {log})"


@contextmanager
def sentinel_group(directory: Path, failover_timeout_ms: int, relayed: bool = False) -> Iterator[Group]:
    """A settled group; with ``relayed`` the replica replicates through a ``Relay``.

    A sentinel reconfigures a replica whose master address is not the primary's (the relay's
    is not) ``failover_timeout_ms`` after it found it: a relayed group's test must end sooner."""
    primary = RedisServer(port=free_port(), data_dir=directory / "primary", extra=SYNC_AT_ONCE)
    replica = RedisServer(port=free_port(), data_dir=directory / "replica")
    started = Group(primary, replica, [])
    try:
        primary.start()
        if relayed:
            started.relay = Relay(primary.port)
        source = primary.port if started.relay is None else started.relay.port
        # The primary lists the replica at the address its connection comes from (the
        # relay's: 127.0.0.1 too) and the port the replica announces (its own), so the
        # sentinels find the replica itself, not the relay.
        replica.extra = (*SYNC_AT_ONCE, "--replicaof", "127.0.0.1", str(source))
        replica.start()
        for number in range(SENTINELS):
            started.sentinels.append(
                Sentinel.start(directory / f"sentinel-{number}", primary.port, failover_timeout_ms)
            )
        wait_until(
            started.settled,
            30,
            "the replica to sync and the sentinels to find the replica and each other",
            interval=0.1,
        )
        yield started
    finally:
        for sentinel in started.sentinels:
            sentinel.stop()
        started.replica.kill()
        started.primary.kill()
        if started.relay is not None:
            started.relay.close()
