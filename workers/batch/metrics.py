"""Prometheus metrics of the worker processes: what each batch did, how long its insert took,
how late it was stored, and how often the store had to be retried.

The batch job records through a few one-line calls (``batch_claimed``, ``timed_insert``,
``store_retried``, ``batch_stored``, ``crawler_hits_stored``). Labels are closed sets only:
the lane, the drop reason (workers.records.DropReason), the pipeline step of a dead letter, a
crawler's purpose and verdict (shared.crawlers). Never an IP, a token, a site, a URL, a
crawler's name or a batch id.

Many processes, one endpoint per host: ``hitstream worker -n N`` runs N processes and
prometheus-client's multiprocess mode sums them (workers.host.metrics_endpoint), chosen over a
port per process because a scrape configuration then needs one target per host whatever N
is, the sums are what the dashboard and alerts want anyway, and a process that exits leaves
its counts in the host's totals (its live-process gauge is removed). Outside a ``hitstream
worker`` with HITSTREAM_WORKER_METRICS_PORT set (tests, a bare ``run_worker_process``) the
same metrics count in this process's memory, in ``REGISTRY``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.crawlers.identity import Purpose
from shared.crawlers.verification import Verdict
from shared.lanes import LANES
from workers.batch.dead_letters import DeadLetter
from workers.batch.queue import Batch
from workers.records import CrawlerHitRow, Drop, DropReason, StoredRow

REGISTRY = CollectorRegistry()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

ENVELOPES = Counter(
    "hitstream_worker_envelopes",
    "Envelopes processed and acknowledged (stored, dropped or dead-lettered), by lane.",
    ["lane"],
    registry=REGISTRY,
)
STORED = Counter(
    "hitstream_worker_rows_stored",
    "Pageview, event and crawler-hit rows the store accepted, by lane.",
    ["lane"],
    registry=REGISTRY,
)
CRAWLER_HITS = Counter(
    "hitstream_worker_crawler_hits",
    "Crawler hits the store accepted, by the crawler's purpose and the verdict on its address.",
    ["purpose", "verdict"],
    registry=REGISTRY,
)
DROPS = Counter(
    "hitstream_worker_drops", "Pageviews and events dropped by the pipeline, by reason.", ["reason"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "hitstream_worker_dead_letters",
    "Envelopes sent to dead letters, by the pipeline step that failed (store: refused by the store).",
    ["step"],
    registry=REGISTRY,
)
BATCH_ENVELOPES = Histogram(
    "hitstream_worker_batch_envelopes",
    "Envelopes per acknowledged batch, by lane.",
    ["lane"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
    registry=REGISTRY,
)
INSERT_SECONDS = Histogram(
    "hitstream_worker_insert_seconds",
    "Time a batch's insert into the store took, when it succeeded.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CLAIM_TO_STORE_SECONDS = Histogram(
    "hitstream_worker_claim_to_store_seconds",
    "From a job taking a claimed batch to the batch being stored and acknowledged, by lane.",
    ["lane"],
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
QUEUE_TO_STORE_SECONDS = Histogram(
    "hitstream_worker_queue_to_store_seconds",
    "From the oldest envelope of a batch entering Redis (its stream id, Redis's clock) to the "
    "batch being acknowledged (this host's clock), by lane.",
    ["lane"],
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
STORE_RETRIES = Counter(
    "hitstream_worker_store_retries",
    "Batch inserts retried because the store was unavailable.",
    registry=REGISTRY,
)
PROCESSES = Gauge(
    "hitstream_worker_processes",
    "Worker processes running (summed over the live processes of the host).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# Label values exist from the start (at 0), so rate() and increase() see a series's first count.
for _lane in LANES:
    ENVELOPES.labels(_lane)
    STORED.labels(_lane)
for _reason in DropReason:
    DROPS.labels(_reason.value)
for _purpose in Purpose:
    for _verdict in Verdict:
        CRAWLER_HITS.labels(_purpose.value, _verdict.value)

# Batch id -> when the job took it (monotonic); bounded, since a released batch never reports.
_CLAIMED_AT_LIMIT = 64
_claimed_at: collections.OrderedDict[str, float] = collections.OrderedDict()


def process_started() -> None:
    """This process works batches (the live-process gauge)."""
    PROCESSES.set(1)


def batch_claimed(batch: Batch) -> None:
    """The job took ``batch``: the start of its claim-to-store time."""
    _claimed_at[batch.id] = time.monotonic()
    while len(_claimed_at) > _CLAIMED_AT_LIMIT:
        _claimed_at.popitem(last=False)


@contextmanager
def timed_insert() -> Iterator[None]:
    """Times the insert inside the block; an insert that raises is not counted."""
    started = time.perf_counter()
    yield
    INSERT_SECONDS.observe(time.perf_counter() - started)


def store_retried() -> None:
    STORE_RETRIES.inc()


def batch_stored(batch: Batch, stored_rows: int, drops: Sequence[Drop], letters: Sequence[DeadLetter]) -> None:
    """``batch`` was stored and acknowledged: ``stored_rows`` rows accepted, ``drops`` counted,
    ``letters`` dead-lettered (pipeline failures and rows the store refused)."""
    lane = batch.lane
    ENVELOPES.labels(lane).inc(len(batch.entries))
    STORED.labels(lane).inc(stored_rows)
    for reason, count in collections.Counter(drop.reason.value for drop in drops).items():
        DROPS.labels(reason).inc(count)
    for step, count in collections.Counter(letter.step for letter in letters).items():
        DEAD_LETTERS.labels(step).inc(count)
    BATCH_ENVELOPES.labels(lane).observe(len(batch.entries))
    if (claimed_at := _claimed_at.pop(batch.id, None)) is not None:
        CLAIM_TO_STORE_SECONDS.labels(lane).observe(time.monotonic() - claimed_at)
    if batch.entries:
        queued_ms = int(batch.entries[0].id.split("-", 1)[0])  # a stream id is "<ms>-<seq>"
        QUEUE_TO_STORE_SECONDS.labels(lane).observe(max(0.0, time.time() - queued_ms / 1000))


def crawler_hit_labels(rows: Sequence[StoredRow]) -> list[tuple[int, str, str]]:
    """(position, purpose, verdict) of each crawler hit among a batch's rows."""
    return [(position, row.purpose, row.verdict) for position, row in enumerate(rows) if type(row) is CrawlerHitRow]


def crawler_hits_stored(hits: Sequence[tuple[int, str, str]], refused_rows: Mapping[int, str]) -> None:
    """A batch was stored: count its crawler hits (``crawler_hit_labels``) less the rows the
    store refused."""
    counts = collections.Counter(
        (purpose, verdict) for position, purpose, verdict in hits if position not in refused_rows
    )
    for (purpose, verdict), count in counts.items():
        CRAWLER_HITS.labels(purpose, verdict).inc(count)
