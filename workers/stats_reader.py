"""Reading site stats from wherever the store is: directly, or through the worker owning it.

A ClickHouse server answers any number of readers. The embedded engine (``chdb://PATH``) can
be opened by one process only. While a ``hitstream worker`` owns the path (its owner lock,
held from before it opens the store until it has stopped: workers.store.dsn), the query goes
to the thread of that worker that answers stats (workers.runtime.stats_answers); otherwise
the reader opens the store itself, and waits its turn while another short-lived process (a
migration, another reader) has it open.

Waiting for the store, its owner's answer or another process's turn, is bounded by the
caller's ``budget`` (``hitstream stats --wait``, 2 s by default; the caller bounds each Redis
command by it too): past it the reader raises StoreUnavailable saying what it waited for.
Reading a store this process opened itself is its own work, not a wait, and is not cut short.
"""

from __future__ import annotations

import io
import math
import os
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis
from wurlitzer import Wurlitzer

from shared import keys
from workers.runtime.stats_answers import StatsQuery
from workers.store.dsn import chdb_path, chdb_path_in_use, in_use_message, store_owner
from workers.store.unavailable import StoreUnavailable

if TYPE_CHECKING:
    from workers.store.store import Store

# While waiting: how often the reader looks again at who has the store (an owner that
# stopped, a process that closed it).
LOOK_AGAIN_SECONDS = 0.2


def read_site_stats(
    dsn: str,
    redis_client: redis.Redis,
    site_id: str,
    date_from: date | None,
    date_to: date | None,
    limit: int,
    budget: float,
    all_traffic: bool = False,
) -> dict[str, Any]:
    path = chdb_path(dsn)
    if path is None:
        return _read(dsn, site_id, date_from, date_to, limit, all_traffic)
    if not path.is_dir():
        raise StoreUnavailable(f"there is no store at {path} yet: run `hitstream migrate` or start the pipeline")
    deadline = time.monotonic() + budget
    query = StatsQuery(site_id, date_from, date_to, limit, all_traffic, deadline=time.time() + budget)
    asked = False
    while True:
        owner = store_owner(path)
        if owner is None:
            try:
                return _read(dsn, site_id, date_from, date_to, limit, all_traffic)
            except StoreUnavailable:
                if store_owner(path) is None and not chdb_path_in_use(path):
                    raise  # not another process's turn: the store itself failed
        else:
            if not asked:
                _ask(redis_client, query, budget)
                asked = True
            answer = _answer(redis_client, query, min(LOOK_AGAIN_SECONDS, deadline - time.monotonic()))
            if answer is not None:
                return answer
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if owner is None:
                raise StoreUnavailable(
                    f"{in_use_message(path)}, and it was not closed within {budget:g} s; try again shortly"
                )
            raise StoreUnavailable(_unanswered(redis_client, query, path, owner, budget))
        if owner is None:
            time.sleep(min(LOOK_AGAIN_SECONDS, remaining))


def _read(
    dsn: str, site_id: str, date_from: date | None, date_to: date | None, limit: int, all_traffic: bool
) -> dict[str, Any]:
    store = _open(dsn)
    try:
        return store.site_stats(site_id, date_from, date_to, limit, all_traffic)
    finally:
        store.close()


def _open(dsn: str) -> Store:
    """``open_store``, with what chdb writes to this process's stderr itself while it opens an
    embedded store kept off the operator's terminal: its own line on why it cannot ("Cannot
    lock file ... Another server instance ...", when another process opened the store right
    after the reader saw it free) ends the error instead, and what it writes on a store it
    opens is passed on as it was. A reader gives one reason, in the project's words."""
    # Imported here, not above: the engine (clickhouse-connect, chdb, Arrow) takes a second or
    # more to load, which a call that only asks the store's owner never needs.
    from workers.store.store import open_store

    refused: StoreUnavailable | None = None
    # wurlitzer points fd 2 at a buffer (chdb writes there itself, not through sys.stderr) and
    # puts it back whatever open_store raises.
    printed = io.BytesIO()
    with Wurlitzer(stderr=printed, encoding=None):
        try:
            store = open_store(dsn)
        except StoreUnavailable as error:
            refused = error
    said = printed.getvalue()
    if refused is not None:
        engine = said.decode(errors="replace").strip()
        raise StoreUnavailable(f"{refused} ({engine})" if engine else str(refused)) from refused
    os.write(2, said)
    return store


def _ask(redis_client: redis.Redis, query: StatsQuery, budget: float) -> None:
    """Send ``query`` to the store's owner; the list expires if no owner reads it."""
    with redis_client.pipeline() as pipe:
        pipe.rpush(keys.STATS_REQUESTS, query.to_json())
        pipe.expire(keys.STATS_REQUESTS, math.ceil(budget) + 1)
        pipe.execute()


def _answer(redis_client: redis.Redis, query: StatsQuery, wait: float) -> dict[str, Any] | None:
    """The owner's answer to ``query`` if it comes within ``wait`` seconds, else None."""
    popped = redis_client.blpop([query.answer_key], timeout=max(wait, 0.01))
    if popped is None:
        return None
    answer = orjson.loads(popped[1])
    if "unavailable" in answer:
        raise StoreUnavailable(f"the worker that owns the store could not read stats: {answer['unavailable']}")
    return cast("dict[str, Any]", answer["stats"])


def _unanswered(redis_client: redis.Redis, query: StatsQuery, path: Path, owner: int, budget: float) -> str:
    """Why the owner did not answer, after taking the query back if it is still waiting (so
    none lingers): untaken, the owner is not answering yet; taken, it is busy with it."""
    worker = f"the hitstream worker that owns the store at {path} (pid {owner or 'unknown'})"
    if redis_client.lrem(keys.STATS_REQUESTS, 1, query.to_json().decode()):
        return f"{worker} is not answering stats yet (it is starting or stopping); try again shortly"
    return f"{worker} took the query but did not answer within {budget:g} s (it is busy); try again shortly"
