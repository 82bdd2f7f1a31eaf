"""Search everything hitstream keeps or prints for strings that must never be there (visitor
IPs, token secrets): every column of every table in chdb stores, every Redis key but the
ingest stream, log files and saved /metrics pages. Returns findings instead of asserting, so
a positive control can prove the search would have found them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from shared import keys

# Runs in a child process: prints [store, table, needle] per table holding a needle. The
# engine opens one store at a time in a process; closing a store's client lets it open the
# next, about 0.1 s each against 0.6 CPU-s for a new process (Python and the engine started
# again) per store. Each table is read as the engine's own text (TabSeparated), not as Python
# rows: IPs and token secrets hold no character that format escapes.
_SCAN_STORES = """
import json, sys
import clickhouse_connect
stores, needles = json.loads(sys.argv[1]), json.loads(sys.argv[2])
found = []
for store in stores:
    client = clickhouse_connect.get_client(dsn="chdb://" + store)
    # Every database: the ClickHouse HTTP fixture's store keeps its tables in `hitstream`.
    tables = client.query("SELECT concat('`', database, '`.`', name, '`') FROM system.tables"
                          " WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema')").result_rows
    for (table,) in tables:
        text = client.raw_query(f"SELECT * FROM {table}", fmt="TabSeparated").decode(errors="replace")
        found.extend([store, table, needle] for needle in needles if needle in text)
    client.close()
print(json.dumps(found))
"""


# Child processes scanning side by side, each its share of the stores one after another (the
# suite leaves about 150).
STORE_SCANNERS = 4


def scan_stores(stores: Iterable[Path], needles: list[str]) -> list[str]:
    """Every column of every table of every store that exists, searched for ``needles``."""
    existing = [str(store) for store in stores if store.exists()]
    with ThreadPoolExecutor(STORE_SCANNERS) as scans:
        found = scans.map(
            lambda share: _scan(share, needles), [existing[n::STORE_SCANNERS] for n in range(STORE_SCANNERS)]
        )
        return [finding for findings in found for finding in findings]


def _scan(stores: list[str], needles: list[str]) -> list[str]:
    if not stores:
        return []
    output = subprocess.run(
        [sys.executable, "-c", _SCAN_STORES, json.dumps(stores), json.dumps(needles)],
        capture_output=True,
        check=True,
        text=True,
    )
    return [
        f"store {store} table {table}: {needle}" for store, table, needle in json.loads(output.stdout.splitlines()[-1])
    ]


def redis_text(client: redis.Redis, include_stream: bool = False) -> dict[str, str]:
    """Every key's value as text (key -> text), the lanes' ingest streams left out unless asked."""
    values: dict[str, str] = {}
    for raw_key in client.scan_iter(count=1000):
        key = raw_key.decode(errors="replace")
        if key in (keys.STREAM, keys.BULK_STREAM) and not include_stream:
            continue
        kind = client.type(raw_key).decode()
        values[key] = repr(_value(client, raw_key, kind))
    return values


def _value(client: redis.Redis, key: bytes, kind: str) -> object:
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return client.smembers(key)
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    return client.xrange(key) if kind == "stream" else None


def scan_redis(client: redis.Redis, needles: list[str], include_stream: bool = False) -> list[str]:
    return [
        f"redis key {key}: {needle}"
        for key, text in redis_text(client, include_stream).items()
        for needle in needles
        if needle in text
    ]


def scan_files(paths: Iterable[Path], needles: list[str]) -> list[str]:
    found = []
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        found.extend(f"file {path}: {needle}" for needle in needles if needle in text)
    return found
