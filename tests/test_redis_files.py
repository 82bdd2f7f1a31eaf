"""The visitor IP on Redis's disk: after the worker processed every pageview and had Redis
rewrite its files, no file in Redis's data directory (the multi-part AOF's base and incr
files and manifest, dump.rdb) holds any of the test IPs.

Real processes: a Redis of the test's own, ``hitstream api``, ``hitstream worker`` on a chdb
store. Redis runs with ``rdbcompression no`` so that a byte search can see into RDB data
(LZF would hide the IPs from the search, not from a reader); the positive control proves the
search finds them in every kind of file before the worker runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from tests.ports import free_port
from tests.procs import Processes, stored_pages, wait_until
from tests.traffic import VISITOR_IPS, exact_count, ingest_token, post_pageviews

PAGEVIEWS = 3000
FILES_CLEAN_SECONDS = 60.0

# name -> (redis-server arguments, worker settings)
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    # AOF with its RDB preamble and RDB snapshots; the rewrite is due once every pageview was
    # processed (the count is reached by the last batch only).
    "entries, AOF with RDB preamble and snapshots": (
        ("--save", "3600 1"),
        {"HITSTREAM_REWRITE_AFTER_ENTRIES": str(PAGEVIEWS)},
    ),
    # A plain command AOF, snapshots too; the rewrite is due 2 s after the previous one.
    "time, AOF without preamble and snapshots": (
        ("--aof-use-rdb-preamble", "no", "--save", "3600 1"),
        {"HITSTREAM_REWRITE_AFTER_SECONDS": "2"},
    ),
    # No AOF: only the RDB snapshot holds IPs, and BGSAVE replaces it.
    "time, snapshots only": (
        ("--appendonly", "no", "--save", "3600 1"),
        {"HITSTREAM_REWRITE_AFTER_SECONDS": "2"},
    ),
}


@pytest.fixture
def files_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    arguments, _ = VARIANTS[request.param]
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis", extra=("--rdbcompression", "no", *arguments))
    server.start()
    yield server
    server.stop()


def data_files(server: RedisServer) -> list[Path]:
    """Every file Redis keeps its data in (its log is ours, not Redis's data)."""
    return sorted(path for path in server.data_dir.rglob("*") if path.is_file() and path.name != "redis.log")


def files_with_ips(server: RedisServer) -> dict[str, list[str]]:
    found = {}
    for path in data_files(server):
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # a temporary file of a rewrite, renamed or deleted meanwhile
            continue
        ips = [ip for ip in VISITOR_IPS if ip.encode() in content]
        if ips:
            found[path.name] = ips
    return found


def wait_for_background_saves(client: redis.Redis) -> None:
    def idle() -> bool:
        state = client.info("persistence")
        return not (
            state["rdb_bgsave_in_progress"] or state["aof_rewrite_in_progress"] or state["aof_rewrite_scheduled"]
        )

    wait_until(idle, 60, "Redis's background saves to finish", interval=0.1)


@pytest.mark.parametrize("files_redis", list(VARIANTS), indirect=True)
def test_no_file_of_redis_holds_a_visitor_ip_after_processing_and_the_rewrite(
    files_redis: RedisServer, processes: Processes, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, worker_settings = VARIANTS[request.node.callspec.params["files_redis"]]
    client = redis.Redis.from_url(files_redis.url)
    aof = bool(client.info("persistence")["aof_enabled"])
    secret = ingest_token(client)
    # Without AOF only the relaxed durability mode answers 202 (shared.durability).
    settings = {"HITSTREAM_REDIS_URL": files_redis.url, "HITSTREAM_DURABILITY": "fsync" if aof else "relaxed"}
    api = processes.api(**settings)
    answers = asyncio.run(post_pageviews(api.url, secret, PAGEVIEWS, concurrency=20))
    assert len(answers.accepted()) == PAGEVIEWS

    # Positive control: with the pageviews queued, a snapshot and a rewrite hold the IPs.
    client.bgsave()
    wait_for_background_saves(client)
    if aof:
        client.bgrewriteaof()
        wait_for_background_saves(client)
    before = files_with_ips(files_redis)
    names = {path.name for path in data_files(files_redis)}
    assert set(VISITOR_IPS) <= set(before["dump.rdb"]), before
    if aof:
        base = next(name for name in names if ".base." in name)
        assert set(VISITOR_IPS) <= set(before[base]), before
        assert any(".incr." in name for name in names) and any(name.endswith(".manifest") for name in names)

    worker = processes.worker(tmp_path / "store", **settings, **worker_settings)
    wait_until(lambda: client.xlen(keys.STREAM) == 0, 120, "the worker to process every pageview", interval=0.1)
    drained = time.monotonic()
    wait_until(
        lambda: not files_with_ips(files_redis),
        FILES_CLEAN_SECONDS,
        "Redis's files to hold no visitor IP",
        interval=0.2,
    )
    print(
        f"\nFIGURES redis files clean {time.monotonic() - drained:.1f} s after the queue drained "
        f"({request.node.callspec.params['files_redis']})"
    )

    assert worker.stop() == 0
    assert "dump.rdb" in {path.name for path in data_files(files_redis)}
    assert int(client.hget(keys.REWRITE_STATE, "processed")) == PAGEVIEWS
    figures = exact_count("redis files", answers, stored_pages(tmp_path / "store")[0])
    assert (figures.accepted, figures.stored, figures.duplicated, figures.lost) == (PAGEVIEWS, PAGEVIEWS, 0, 0)
    client.close()
