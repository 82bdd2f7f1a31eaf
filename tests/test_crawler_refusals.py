"""A known crawler's pageview or event is two rows (the pageview or event and its crawler hit)
from one stream entry, and the store may refuse either or both. The entry is dead-lettered
once, without its address, naming the tables whose rows were refused; its requeue stores
those rows again and no other, so each row is stored exactly once, also when the store
refuses them again first. A dead letter written before tables were named restores every row,
as it always did."""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import orjson
import pytest
import redis

from shared import keys
from shared.config import Settings
from shared.control.exclusions import ExclusionKind
from tests.envelopes import SITE_ID, envelope
from tests.stores import query
from tests.test_pipeline_crawlers import GPTBOT, OPENAI_GPTBOT_IP, ai_fetch
from tests.test_pipeline_process import rule
from workers.batch import dead_letters
from workers.batch.delivery import StoreAndAcknowledge
from workers.batch.enrichment import WriterBatch, enrich
from workers.batch.queue import BatchQueue
from workers.pipeline import Pipeline, build_pipeline
from workers.store.opening import StoreOpening
from workers.store.store import Store

ROW_TABLE = {"pageview": "pageviews", "event": "events"}  # an AI fetch has its hit alone
KINDS: dict[str, dict[str, Any]] = {
    "pageview": {},
    "event": {"kind": "event", "event_name": "signup"},
    "ai_fetch": ai_fetch(),
}
REFUSED_PATH = "/refused"


@pytest.fixture(scope="module")
def module_pipeline() -> Pipeline:
    return build_pipeline(Settings())


@pytest.fixture
def pipeline(module_pipeline: Pipeline) -> Iterator[Pipeline]:
    module_pipeline.update_exclusions([])
    yield module_pipeline
    module_pipeline.update_exclusions([])


def queue_crawler(client: redis.Redis, kind: str, path: str = REFUSED_PATH) -> str:
    """Queue a GPTBot request of ``kind`` from OpenAI's address for ``path``; returns its page id."""
    page_id = str(uuid.uuid4())
    url = path if kind == "ai_fetch" else f"https://mysite.example{path}"
    sent = envelope(user_agent=GPTBOT, visitor_ip=OPENAI_GPTBOT_IP, page_id=page_id, **{**KINDS[kind], "url": url})
    client.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: sent.to_json(), keys.TOKEN_FIELD: "token-1"})
    return page_id


def refuse(store: Store, tables: set[str]) -> None:
    """Make the store refuse rows of ``tables`` at REFUSED_PATH (Code 469), like an operator's constraint."""
    for table in tables:
        store._client.command(f"ALTER TABLE {table} ADD CONSTRAINT refuse_path CHECK path != '{REFUSED_PATH}'")


def accept(store: Store, tables: set[str]) -> None:
    for table in tables:
        store._client.command(f"ALTER TABLE {table} DROP CONSTRAINT refuse_path")


def work(client: redis.Redis, store: Store, pipeline: Pipeline, through_writer: bool = False) -> None:
    """Claim, enrich and store every entry waiting in the live lane, as a worker's batch job
    does; ``through_writer``: as an enricher and the store writer do (a pickled WriterBatch)."""
    queue = BatchQueue(client, claim_timeout_seconds=60)
    storing = StoreAndAcknowledge(client, queue, StoreOpening(lambda: store), threading.Event())
    while (batch := queue.claim(100)) is not None:
        enriched = enrich(batch, pipeline)
        if through_writer:
            storing.store_batch(pickle.loads(pickle.dumps(WriterBatch.of(enriched))))
        else:
            storing.deliver(enriched)


def stored(store: Store, page_id: str) -> dict[str, int]:
    """How many rows of ``page_id`` each table holds."""
    counts = {}
    for table, column in (("pageviews", "page_id"), ("events", "page_id"), ("crawler_hits", "hit_id")):
        counts[table] = query(store, f"SELECT count() FROM {table} WHERE {column} = %(id)s", id=page_id)[0][0]
    return counts


def once_in(tables: set[str]) -> dict[str, int]:
    """``stored``'s answer when each of ``tables`` holds the row once and the others none."""
    return {table: int(table in tables) for table in ("pageviews", "events", "crawler_hits")}


def tables_of(kind: str) -> set[str]:
    return {"crawler_hits"} | ({ROW_TABLE[kind]} if kind in ROW_TABLE else set())


PARTIAL_REFUSALS = [
    ("pageview", {"pageviews"}),
    ("pageview", {"crawler_hits"}),
    ("pageview", {"pageviews", "crawler_hits"}),
    ("event", {"events"}),
    ("event", {"crawler_hits"}),
    ("event", {"events", "crawler_hits"}),
    ("ai_fetch", {"crawler_hits"}),
]


@pytest.mark.parametrize("through_writer", [False, True], ids=["stored by its enricher", "stored by the writer"])
@pytest.mark.parametrize(
    ("kind", "refused"), PARTIAL_REFUSALS, ids=[f"{kind}-{'+'.join(sorted(t))}" for kind, t in PARTIAL_REFUSALS]
)
def test_a_requeued_crawler_request_stores_only_the_rows_the_store_refused_so_each_row_is_stored_once(
    real_redis: redis.Redis, store: Store, pipeline: Pipeline, kind: str, refused: set[str], through_writer: bool
) -> None:
    refuse(store, refused)
    page_id = queue_crawler(real_redis, kind)
    neighbour = queue_crawler(real_redis, kind, path="/")
    work(real_redis, store, pipeline, through_writer)

    assert stored(store, page_id) == once_in(tables_of(kind) - refused)
    (letter,) = dead_letters.list_dead_letters(real_redis)
    assert (letter.step, letter.envelope["page_id"], letter.refused_tables) == ("store", page_id, sorted(refused))
    assert "Code: 469" in letter.error and OPENAI_GPTBOT_IP not in letter.to_json().decode()

    accept(store, refused)
    assert dead_letters.requeue(real_redis, None) == [letter.id]
    work(real_redis, store, pipeline, through_writer)

    assert stored(store, page_id) == once_in(tables_of(kind))
    assert stored(store, neighbour) == once_in(tables_of(kind))
    assert dead_letters.count(real_redis) == 0 and real_redis.xlen(keys.STREAM) == 0


@pytest.mark.parametrize("refused", [{"pageviews"}, {"crawler_hits"}], ids=["pageview refused", "hit refused"])
def test_a_requeued_crawler_pageview_dropped_by_a_newer_rule_counts_a_drop_only_if_its_pageview_was_refused(
    real_redis: redis.Redis, store: Store, pipeline: Pipeline, refused: set[str]
) -> None:
    refuse(store, refused)
    page_id = queue_crawler(real_redis, "pageview")
    work(real_redis, store, pipeline)
    accept(store, refused)
    pipeline.update_exclusions([rule(SITE_ID, ExclusionKind.PATH, REFUSED_PATH)])

    assert len(dead_letters.requeue(real_redis, None)) == 1
    work(real_redis, store, pipeline)

    assert stored(store, page_id) == once_in(tables_of("pageview") - refused)
    drops = query(store, "SELECT sum(count) FROM drop_counts")[0][0]
    assert drops == (1 if "pageviews" in refused else 0)
    assert dead_letters.count(real_redis) == 0 and real_redis.xlen(keys.STREAM) == 0


@pytest.mark.parametrize("kind", ["pageview", "event"])
def test_a_store_dead_letter_written_before_tables_were_named_restores_every_row_once(
    real_redis: redis.Redis, store: Store, pipeline: Pipeline, kind: str
) -> None:
    refuse(store, tables_of(kind))
    page_id = queue_crawler(real_redis, kind)
    work(real_redis, store, pipeline)
    (letter,) = dead_letters.list_dead_letters(real_redis)
    older = {name: value for name, value in asdict(letter).items() if name != "refused_tables"}
    real_redis.hset(keys.DEAD_LETTERS, letter.id, orjson.dumps(older))
    accept(store, tables_of(kind))

    assert dead_letters.requeue(real_redis, None) == [letter.id]
    ((_, fields),) = real_redis.xrange(keys.STREAM)
    assert keys.RESTORE_FIELD.encode() not in fields
    work(real_redis, store, pipeline)

    assert stored(store, page_id) == once_in(tables_of(kind))
    assert dead_letters.count(real_redis) == 0


def test_a_requeued_crawler_pageview_refused_again_stays_one_dead_letter_until_each_row_is_stored_once(
    real_redis: redis.Redis, store: Store, pipeline: Pipeline
) -> None:
    refuse(store, {"pageviews"})
    page_id = queue_crawler(real_redis, "pageview")
    work(real_redis, store, pipeline)
    for _ in range(2):  # requeued while the store still refuses the pageview
        assert len(dead_letters.requeue(real_redis, None)) == 1
        work(real_redis, store, pipeline)
        (letter,) = dead_letters.list_dead_letters(real_redis)
        assert letter.refused_tables == ["pageviews"]
        assert stored(store, page_id) == once_in({"crawler_hits"})
    accept(store, {"pageviews"})

    assert dead_letters.requeue(real_redis, None) == [letter.id]
    work(real_redis, store, pipeline)

    assert stored(store, page_id) == once_in({"pageviews", "crawler_hits"})
    assert dead_letters.count(real_redis) == 0 and real_redis.xlen(keys.STREAM) == 0
