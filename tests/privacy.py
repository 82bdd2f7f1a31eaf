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

# Runs in a child process (one process per chdb path): prints [table, needle] per finding.
_SCAN_STORE = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
needles = json.loads(sys.argv[2])
found = []
# Every database: the ClickHouse HTTP fixture's store keeps its tables in `hitstream`.
tables = client.query("SELECT concat('`', database, '`.`', name, '`') FROM system.tables"
                      " WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema')").result_rows
for (table,) in tables:
    for row in client.query(f"SELECT * FROM {table}").result_rows:
        text = "\\x1f".join(map(str, row))
        found.extend([table, needle] for needle in needles if needle in text)
print(json.dumps(found))
"""


# Stores scanned at once: each scan is a child process that mostly starts Python and the
# engine, so two cores run several side by side (the suite leaves about 150 stores).
STORES_AT_ONCE = 4


def scan_stores(stores: Iterable[Path], needles: list[str]) -> list[str]:
    """``scan_store`` of every store that exists, ``STORES_AT_ONCE`` at a time."""
    with ThreadPoolExecutor(STORES_AT_ONCE) as scans:
        found = scans.map(lambda store: scan_store(store, needles), [store for store in stores if store.exists()])
        return [finding for findings in found for finding in findings]


def scan_store(store: Path, needles: list[str]) -> list[str]:
    output = subprocess.run(
        [sys.executable, "-c", _SCAN_STORE, str(store), json.dumps(needles)], capture_output=True, check=True, text=True
    )
    return [f"store {store} table {table}: {needle}" for table, needle in json.loads(output.stdout.splitlines()[-1])]


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
