"""Redis servers for the benchmarks: one per durability setting, their AOF rewritten between
runs, never during one.

Redis rewrites its AOF on its own once the file has doubled (a fork, then a rewrite of the
whole data set): inside a timed run that lands in one variant's run and not in another's.
So the servers started here never rewrite on their own; the bench calls ``rewrite_aof``
between runs, once the stream is emptied, which also keeps the files on disk small.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import redis

from hitstream.redis_server import RedisServer
from shared.durability import Durability
from tests.ports import free_port

NO_AUTO_REWRITE = ("--auto-aof-rewrite-percentage", "0")


def start_redis(
    stack: ExitStack, data_dir: Path, appendfsync: str, replica_of: RedisServer | None = None
) -> RedisServer:
    """A Redis on a free port, AOF on with ``appendfsync``, stopped when ``stack`` closes;
    with ``replica_of``: a replica of that server, returned once its first sync is done."""
    extra = NO_AUTO_REWRITE
    if replica_of is not None:
        extra += ("--replicaof", replica_of.host, str(replica_of.port))
    server = RedisServer(port=free_port(), data_dir=data_dir, extra=extra, appendfsync=appendfsync)
    server.start()
    stack.callback(server.stop)
    if replica_of is not None:
        client = redis.Redis(host=server.host, port=server.port)
        deadline = time.monotonic() + 30
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on port {server.port} did not sync with port {replica_of.port}")
            time.sleep(0.05)
    return server


def start_mode(stack: ExitStack, data_dir: Path, mode: Durability) -> list[RedisServer]:
    """The Redis servers that give ``mode``, the primary first: ``relaxed`` one with
    ``appendfsync everysec``; ``fsync`` one with ``appendfsync always``; ``replicated`` that
    and one replica on this machine (``appendfsync always`` too: a replica the sentinels may
    promote must give the mode as well)."""
    primary = start_redis(stack, data_dir / str(mode), "always" if mode.needs_fsync else "everysec")
    if mode is not Durability.REPLICATED:
        return [primary]
    return [primary, start_redis(stack, data_dir / f"{mode}-replica", "always", replica_of=primary)]


def rewrite_aof(client: redis.Redis) -> None:
    """Rewrite the server's AOF now and wait until the rewrite is done (after any rewrite
    already under way: a replica rewrites its AOF after its first sync)."""
    _wait_for_rewrites(client)
    client.bgrewriteaof()
    _wait_for_rewrites(client)


def _wait_for_rewrites(client: redis.Redis) -> None:
    while True:
        persistence = client.info("persistence")
        if not persistence["aof_rewrite_in_progress"] and not persistence["aof_rewrite_scheduled"]:
            return
        time.sleep(0.02)
