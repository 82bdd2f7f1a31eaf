"""Stats queries answered by the process that owns an embedded store, on a thread of their own.

An embedded chdb store can be opened by one process only, so while a worker owns it,
``hitstream stats`` (workers.stats_reader) asks that process. The answers come from this
thread, not from the RQ work loop: a query never waits behind a batch job (the loop runs
each for seconds, one after the other, while a backlog drains), and the thread answers from
the moment the process starts (a query that arrives while the store is being opened waits
for the opening).

A request is a ``StatsQuery`` as JSON on the list ``STATS_REQUESTS`` (shared.keys), with the
Unix time after which nobody waits for it; the answer is pushed to the list ``STATS_ANSWER``
of its id: ``{"stats": ...}``, or ``{"unavailable": "<why>"}`` when the store cannot answer.
A request found past its deadline is dropped: its reader has already said why it got none.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
import redis

from shared import keys
from workers.store.unavailable import StoreUnavailable

if TYPE_CHECKING:  # the stats command imports this module, and needs no worker
    from workers.runtime.context import WorkerContext

log = logging.getLogger(__name__)

READ_BLOCK_SECONDS = 0.5  # how long a read waits for a request before the loop looks at its stop flag
ANSWER_TTL_SECONDS = 10  # an answer nobody took (its reader gave up) is gone after this


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """One ``hitstream stats`` question: a site, two optional UTC days, the top lists' length,
    humans only or all traffic."""

    site_id: str
    date_from: date | None
    date_to: date | None
    limit: int
    all_traffic: bool = False  # bots and crawlers counted in the pageview and event figures too
    deadline: float = 0.0  # Unix time after which the reader no longer waits
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> StatsQuery:
        fields: dict[str, Any] = orjson.loads(data)
        for name in ("date_from", "date_to"):
            fields[name] = fields[name] and date.fromisoformat(fields[name])
        return cls(**fields)

    @property
    def answer_key(self) -> str:
        return keys.STATS_ANSWER.format(request_id=self.id)


class StatsAnswers(threading.Thread):
    """Answer stats queries from the store of ``context``, one at a time, until stopped."""

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(name="hitstream-stats-answers", daemon=True)
        self.context = context
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                popped = self.context.redis.blpop([keys.STATS_REQUESTS], timeout=READ_BLOCK_SECONDS)
                if popped:
                    self.answer(StatsQuery.from_json(popped[1]))
            except redis.RedisError as error:
                log.warning("stats answers: Redis error, retrying: %s", error)
                self.stopped.wait(1.0)
            except (ValueError, TypeError) as error:
                # Not a request this version understands: its reader is told nothing and gives
                # up at its deadline, while the thread goes on answering the others.
                log.warning("stats answers: dropped a request it cannot read: %s", error)

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def answer(self, query: StatsQuery) -> None:
        if time.time() > query.deadline:
            return
        answer: dict[str, Any]
        try:
            store = self.context.store.get()
            answer = {
                "stats": store.site_stats(query.site_id, query.date_from, query.date_to, query.limit, query.all_traffic)
            }
        except StoreUnavailable as error:
            answer = {"unavailable": str(error)}
        with self.context.redis.pipeline() as pipe:
            pipe.rpush(query.answer_key, orjson.dumps(answer))
            pipe.expire(query.answer_key, ANSWER_TTL_SECONDS)
            pipe.execute()
