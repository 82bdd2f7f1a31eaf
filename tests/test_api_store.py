"""End to end through real ``hitstream api`` and ``hitstream worker`` processes into a chdb
store: events with properties round-trip, and a pageview retried after a client-side timeout
is stored once. Stores are read after the worker exits (one process per chdb path)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from tests.procs import Processes, query_store, stored_pages, wait_until
from tests.traffic import ingest_token, pageview


def stored_events(store: Path) -> list[list[object]]:
    return query_store(store, "SELECT toString(page_id), name, properties FROM events ORDER BY name")


def drain(client: redis.Redis, processes: Processes, store: Path, **settings: str) -> None:
    """Run a worker until the stream is empty, then stop it so the store can be read."""
    worker = processes.worker(store, **settings)
    wait_until(
        lambda: client.xlen(keys.STREAM) == 0,
        60,
        "the worker to empty the stream",
        interval=0.1,
    )
    assert worker.stop() == 0


def test_events_with_properties_round_trip_to_the_store(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {ingest_token(real_redis)}"}
    api = processes.api()
    page_id, body = pageview(1)
    event = {
        **json.loads(body),
        "name": " signup ",
        "properties": {"plan": "pro", "seats": 3, "trial": True},
    }
    bare = {**json.loads(pageview(2)[1]), "name": "click"}
    for sent in (event, bare):
        assert httpx.post(f"{api.url}/api/ingest/server/event", json=sent, headers=headers).status_code == 202
    store = tmp_path / "store"
    drain(real_redis, processes, store)
    assert stored_events(store) == [
        [bare["page_id"], "click", {}],
        [page_id, "signup", {"plan": "pro", "seats": "3", "trial": "true"}],
    ]


def test_pageview_retried_after_a_client_timeout_is_stored_once(
    processes: Processes, own_redis: RedisServer, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    on_own_redis = {
        "HITSTREAM_REDIS_URL": own_redis.url,
        "HITSTREAM_REDIS_TIMEOUT_MS": "10000",
    }
    headers = {"Authorization": f"Bearer {ingest_token(client)}"}
    api = processes.api(**on_own_redis)
    url = f"{api.url}/api/ingest/server/pageview"
    warm_id, warm_body = pageview(0)  # fills the API's token and site caches
    assert httpx.post(url, content=warm_body, headers=headers).status_code == 202
    page_id, body = pageview(1)

    # Redis stalls, the client gives up before the API could answer; Redis comes back and
    # the API completes that hand-off anyway: the pageview is queued, the client never knew.
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, content=body, headers=headers, timeout=0.5)
    os.kill(own_redis.process.pid, signal.SIGCONT)
    wait_until(lambda: client.xlen(keys.STREAM) == 2, 10, "the timed-out pageview to be queued")

    retry = httpx.post(url, content=body, headers=headers, timeout=10)
    assert retry.status_code == 202
    assert client.xlen(keys.STREAM) == 2

    store = tmp_path / "store"
    drain(client, processes, store, **on_own_redis)
    pages, _ = stored_pages(store)
    assert pages == {warm_id: 1, page_id: 1}
