"""run_batch_loop in this process, on the real Redis, with a stand-in pipeline and store:
what gets stored, dead-lettered, retried, released and acknowledged."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
import pytest
import redis
from rq import Queue

from shared import keys
from shared.config import Settings
from shared.envelope import Envelope
from shared.keys import BATCH_QUEUE
from tests.worker_context import worker_context_for
from workers.batch import dead_letters, delivery, loop
from workers.batch.loop import Overlaps
from workers.pipeline import StepFailed
from workers.records import Drop, DropReason, PageviewRow
from workers.runtime import jobs
from workers.runtime.context import WorkerContext
from workers.store.store import Refusals
from workers.store.unavailable import StoreUnavailable

IP = "198.51.100.23"
SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"


def envelope(n: int, path: str = "/") -> Envelope:
    return Envelope(
        site_id=SITE,
        site_domain="example.com",
        page_id=f"00000000-0000-4000-8000-{n:012d}",
        session_id="9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
        timestamp_ms=1_760_000_000_000 + n,
        received_ms=1_760_000_000_000 + n,
        url=f"https://example.com{path}",
        visitor_ip=IP,
        user_agent="Mozilla/5.0",
    )


class StandInPipeline:
    """Path /drop is dropped, /poison breaks the "url" step (with the IP in its message)."""

    def update_exclusions(self, rules: object) -> None:
        pass  # the stand-in has no exclusion rules

    def process(self, env: Envelope) -> tuple[PageviewRow] | Drop:
        moment = datetime.fromtimestamp(env.timestamp_ms / 1000, UTC)
        if env.url.endswith("/drop"):
            return Drop(env.site_id, DropReason.SITE_PATH, moment)
        if env.url.endswith("/poison"):
            raise StepFailed("url", f"cannot parse request from {env.visitor_ip}")
        return (
            PageviewRow(
                site_id=env.site_id,
                timestamp=moment,
                received_at=moment,
                page_id=env.page_id,
                session_id=env.session_id,
            ),
        )


class StandInStore:
    """Deduplicates by batch id like ClickHouse's insert_deduplication_token, and refuses the
    rows and drops of the page_ids in ``refused`` like a store refusing their values."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.refused: set[str] = set()
        self.batches: dict[str, tuple[list[PageviewRow], list[Drop]]] = {}

    def write_batch(self, batch_id: str, rows: list[PageviewRow], drops: list[Drop]) -> Refusals:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection refused")
        refusals = Refusals(
            rows={n: "Code: 469. VIOLATED_CONSTRAINT" for n, row in enumerate(rows) if row.page_id in self.refused},
            drops={n: "Code: 376. CANNOT_PARSE_UUID" for n, drop in enumerate(drops) if drop.site_id in self.refused},
        )
        self.batches.setdefault(
            batch_id,
            (
                [row for n, row in enumerate(rows) if n not in refusals.rows],
                [drop for n, drop in enumerate(drops) if n not in refusals.drops],
            ),
        )
        return refusals

    def migrate(self) -> None:
        pass  # nothing to migrate

    def page_ids(self) -> list[str]:
        return sorted(row.page_id for rows, _ in self.batches.values() for row in rows)


@pytest.fixture
def store() -> StandInStore:
    return StandInStore()


@pytest.fixture(
    params=[Overlaps(claim_ahead=True, write_behind=True), Overlaps(claim_ahead=False, write_behind=False)],
    ids=["overlapped", "in-line"],
)
def context(
    real_redis: redis.Redis, store: StandInStore, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> WorkerContext:
    """Every test runs with the loop's overlaps on and off: the guarantees hold either way."""
    monkeypatch.setattr(delivery, "STORE_RETRY_FIRST_DELAY", 0.01)
    settings = Settings(batch_size=10, claim_timeout_seconds=0.5)
    return dataclasses.replace(
        worker_context_for(real_redis, store, StandInPipeline(), settings), overlaps=request.param
    )


def send(client: redis.Redis, *envelopes: Envelope) -> list[str]:
    return [client.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: env.to_json()}).decode() for env in envelopes]


def test_batch_is_stored_then_acknowledged(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext
) -> None:
    send(real_redis, envelope(1), envelope(2, "/drop"), envelope(3))

    assert jobs.run_batch_loop(context) == 3

    ((rows, drops),) = store.batches.values()
    assert [row.page_id for row in rows] == [envelope(1).page_id, envelope(3).page_id]
    assert [drop.reason for drop in drops] == [DropReason.SITE_PATH]
    assert real_redis.xlen(keys.STREAM) == 0 and real_redis.zcard(keys.BATCH_LEASES) == 0


def test_poison_record_is_dead_lettered_and_its_neighbours_stored(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext
) -> None:
    ids = send(real_redis, envelope(1), envelope(2, "/poison"), envelope(3))
    real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: b'{"site_id": "x", "visitor_ip": "' + IP.encode() + b'"}'})

    assert jobs.run_batch_loop(context) == 4

    assert store.page_ids() == [envelope(1).page_id, envelope(3).page_id]
    letters = dead_letters.list_dead_letters(real_redis)
    assert (letters[0].id, letters[0].step) == (ids[1], "url")
    assert letters[1].step == "decode"
    assert all(IP not in letter.to_json().decode() for letter in letters)
    assert real_redis.xlen(keys.STREAM) == 0


def test_envelopes_in_the_object_form_older_apis_wrote_are_stored_beside_the_array_form(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext
) -> None:
    send(real_redis, envelope(1))
    real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: orjson.dumps(dataclasses.asdict(envelope(2)))})
    too_few = orjson.dumps(orjson.loads(envelope(3).to_json())[:-5])
    too_many = orjson.dumps([*orjson.loads(envelope(4).to_json()), "extra"])
    bad = [real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: data}).decode() for data in (too_few, too_many)]

    assert jobs.run_batch_loop(context) == 4

    assert store.page_ids() == [envelope(1).page_id, envelope(2).page_id]
    letters = dead_letters.list_dead_letters(real_redis)
    assert sorted((letter.id, letter.step) for letter in letters) == sorted((entry, "decode") for entry in bad)
    assert real_redis.xlen(keys.STREAM) == 0


def test_rows_and_drops_the_store_refuses_are_dead_lettered_and_the_rest_acknowledged(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext
) -> None:
    refused_row, refused_drop = envelope(2), envelope(4, "/drop")
    refused_drop.site_id = "6c0e7c1d-0000-4000-8000-000000000004"
    store.refused = {refused_row.page_id, refused_drop.site_id}
    ids = send(real_redis, envelope(1), refused_row, envelope(3, "/drop"), refused_drop, envelope(5))

    assert jobs.run_batch_loop(context) == 5

    assert store.page_ids() == [envelope(1).page_id, envelope(5).page_id]
    ((_, drops),) = store.batches.values()
    assert len(drops) == 1
    letters = dead_letters.list_dead_letters(real_redis)
    assert [(letter.id, letter.step, letter.error) for letter in letters] == [
        (ids[1], "store", "Code: 469. VIOLATED_CONSTRAINT"),
        (ids[3], "store", "Code: 376. CANNOT_PARSE_UUID"),
    ]
    assert [letter.envelope["page_id"] for letter in letters] == [refused_row.page_id, refused_drop.page_id]
    assert all(letter.envelope["visitor_ip"] is None and IP not in letter.to_json().decode() for letter in letters)
    assert real_redis.xlen(keys.STREAM) == 0 and real_redis.zcard(keys.BATCH_LEASES) == 0


def test_unavailable_store_is_retried_and_the_batch_stored_once(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext
) -> None:
    store.failures = 3
    send(real_redis, envelope(1), envelope(2))

    assert jobs.run_batch_loop(context) == 2

    assert store.page_ids() == [envelope(1).page_id, envelope(2).page_id]
    assert real_redis.xlen(keys.STREAM) == 0


def test_store_down_too_long_releases_the_batch_for_a_retry_under_the_same_id(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "STORE_RETRY_SECONDS", 0.05)
    store.failures = 1000
    send(real_redis, envelope(1), envelope(2))

    with pytest.raises(delivery.StoreGaveUp):
        jobs.run_batch_loop(context)

    assert real_redis.xlen(keys.STREAM) == 2 and store.batches == {}
    ((batch_id, deadline),) = real_redis.zrange(keys.BATCH_LEASES, 0, -1, withscores=True)
    assert deadline == 0
    store.failures = 0
    assert jobs.run_batch_loop(context) == 2
    assert list(store.batches) == [batch_id.decode()]
    assert real_redis.xlen(keys.STREAM) == 0


def test_shutdown_while_the_store_is_down_gives_the_batch_back(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext
) -> None:
    store.failures = 1000
    send(real_redis, envelope(1))
    context.shutdown_requested.set()

    assert jobs.run_batch_loop(context) == 0

    assert real_redis.xlen(keys.STREAM) == 1
    assert real_redis.zrange(keys.BATCH_LEASES, 0, -1, withscores=True)[0][1] == 0


def test_a_backlog_is_handled_batch_by_batch_each_acknowledged_after_its_insert(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream_lengths_at_write: list[int] = []
    write = store.write_batch

    def write_and_look(batch_id: str, rows: list[PageviewRow], drops: list[Drop]) -> Refusals:
        stream_lengths_at_write.append(real_redis.xlen(keys.STREAM))
        return write(batch_id, rows, drops)

    monkeypatch.setattr(store, "write_batch", write_and_look)
    send(real_redis, *(envelope(n) for n in range(25)))

    assert jobs.run_batch_loop(context) == 25

    assert [len(rows) for rows, _ in store.batches.values()] == [10, 10, 5]
    # Each insert ran while its own entries were still in the stream and the previous batch's gone.
    assert stream_lengths_at_write == [25, 15, 5]
    assert real_redis.xlen(keys.STREAM) == 0 and real_redis.zcard(keys.BATCH_LEASES) == 0
    assert Queue(BATCH_QUEUE, connection=real_redis).count == 0  # a partial batch: no successor


def test_a_job_out_of_time_with_a_full_batch_enqueues_its_successor(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "CHAIN_SECONDS", 0)
    rq_queue = Queue(BATCH_QUEUE, connection=real_redis)
    send(real_redis, *(envelope(n) for n in range(15)))

    assert jobs.run_batch_loop(context) == 10
    assert rq_queue.count == 1
    assert jobs.run_batch_loop(context) == 5
    assert rq_queue.count == 1  # a partial batch means the queue is drained: no successor


def test_store_giving_up_releases_every_batch_the_job_holds(
    real_redis: redis.Redis, store: StandInStore, context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "STORE_RETRY_SECONDS", 0.05)
    store.failures = 1000
    send(real_redis, *(envelope(n) for n in range(15)))

    with pytest.raises(delivery.StoreGaveUp):
        jobs.run_batch_loop(context)

    assert [deadline for _, deadline in real_redis.zrange(keys.BATCH_LEASES, 0, -1, withscores=True)] == [0, 0]
    store.failures = 0
    assert jobs.run_batch_loop(context) + jobs.run_batch_loop(context) == 15
    assert len(store.page_ids()) == 15 and real_redis.xlen(keys.STREAM) == 0


def _readonly_acknowledgement(*args: object, **kwargs: object) -> None:
    raise redis.ReadOnlyError("You can't write against a read only replica.")


def _failing_insert(batch_id: str, rows: list[PageviewRow], drops: list[Drop]) -> Refusals:
    raise RuntimeError("a bug in the store client")


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(("acknowledge", _readonly_acknowledgement), id="redis-refuses-the-acknowledgement"),
        pytest.param(("insert", _failing_insert), id="the-insert-fails-otherwise"),
    ],
)
def test_a_run_that_fails_otherwise_releases_every_batch_it_holds_at_once(
    real_redis: redis.Redis,
    store: StandInStore,
    context: WorkerContext,
    monkeypatch: pytest.MonkeyPatch,
    failure: tuple[str, object],
) -> None:
    """Not after their leases run out (claim_timeout, a minute by default): a job that fails
    during a failover, say on READONLY from a demoted primary, must not hold the queue that long."""
    where, fail = failure
    if where == "acknowledge":
        monkeypatch.setattr(delivery, "acknowledge", fail)
    else:
        monkeypatch.setattr(store, "write_batch", fail)
    send(real_redis, *(envelope(n) for n in range(15)))

    with pytest.raises((redis.ReadOnlyError, RuntimeError)):
        jobs.run_batch_loop(context)

    leases = real_redis.zrange(keys.BATCH_LEASES, 0, -1, withscores=True)
    assert leases and [deadline for _, deadline in leases] == [0] * len(leases)
    monkeypatch.undo()
    monkeypatch.setattr(delivery, "STORE_RETRY_FIRST_DELAY", 0.01)
    assert jobs.run_batch_loop(context) + jobs.run_batch_loop(context) == 15
    assert store.page_ids() == sorted(envelope(n).page_id for n in range(15))
    assert real_redis.xlen(keys.STREAM) == 0
