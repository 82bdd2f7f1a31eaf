"""Reading site stats from wherever the store is: directly, or through the worker owning it.

A ClickHouse server answers any number of readers. The embedded engine (``chdb://PATH``)
can be opened by one process only, and while the pipeline runs that is the worker, so the
query goes to it as an RQ job (workers.runtime.jobs.site_stats) on the store queue and the answer comes back through RQ.
"""

from __future__ import annotations

from datetime import date
from typing import Any, cast

import redis
from rq import Queue, Worker
from rq.results import Result

from shared.keys import STORE_QUEUE
from workers.runtime.jobs import site_stats
from workers.store.dsn import chdb_path, chdb_path_in_use
from workers.store.store import StoreUnavailable, open_store

WORKER_ANSWER_SECONDS = 10


def read_site_stats(
    dsn: str,
    redis_client: redis.Redis,
    site_id: str,
    date_from: date | None,
    date_to: date | None,
    limit: int = 10,
    timeout: int = WORKER_ANSWER_SECONDS,
    all_traffic: bool = False,
) -> dict[str, Any]:
    path = chdb_path(dsn)
    if path is not None:
        if not path.is_dir():
            raise StoreUnavailable(f"there is no store at {path} yet: run `hitstream migrate` or start the pipeline")
        if chdb_path_in_use(path):
            return ask_store_owner(redis_client, site_id, date_from, date_to, limit, timeout, all_traffic)
    store = open_store(dsn)
    try:
        return store.site_stats(site_id, date_from, date_to, limit, all_traffic)
    finally:
        store.close()


def ask_store_owner(
    redis_client: redis.Redis,
    site_id: str,
    date_from: date | None,
    date_to: date | None,
    limit: int,
    timeout: int,
    all_traffic: bool = False,
) -> dict[str, Any]:
    """Run the stats query in the worker process that has the store open."""
    queue = Queue(STORE_QUEUE, connection=redis_client)
    # ttl: a job no worker picked up in time is discarded instead of running later for nobody.
    job = queue.enqueue(
        site_stats, site_id, date_from, date_to, limit, all_traffic, ttl=timeout, result_ttl=60, failure_ttl=60
    )
    result = job.latest_result(timeout=timeout)
    if result is None:
        # The job's hash may already have expired (ttl), so take it off the queue directly.
        queue.remove(job)
        if Worker.all(connection=redis_client, queue=queue):
            # A live worker listens but did not take the job: it is inside a long batch (or
            # waiting for its store), which is not the same trouble as no worker at all.
            raise StoreUnavailable(
                f"the worker that owns the store is busy and did not answer within {timeout} s; try again shortly"
            )
        raise StoreUnavailable(
            f"the store is open in another process, and no worker answered on RQ queue {STORE_QUEUE!r}"
            f" within {timeout} s: is `hitstream worker` running with the same HITSTREAM_REDIS_URL?"
        )
    if result.type != Result.Type.SUCCESSFUL:
        last_line = (result.exc_string or "unknown error").strip().splitlines()[-1]
        raise StoreUnavailable(f"the worker that owns the store could not read stats: {last_line}")
    return cast("dict[str, Any]", result.return_value)  # what workers.runtime.jobs.site_stats returned
