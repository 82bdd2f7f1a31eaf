"""One claimed batch through the pipeline, with no I/O: ``enrich`` turns its entries into rows,
drop counts and dead letters (``EnrichedBatch``), which the batch's delivery
(workers.batch.delivery) stores and acknowledges in this process; or, when several processes
enrich for one embedded store, ``WriterBatch.of`` builds the inserts that store them, which
the store writer stores and acknowledges.

Neither shape holds a decoded envelope, and a ``WriterBatch`` leaves each entry's envelope
JSON behind too, so no visitor IP travels through the enriched stream. The few
envelopes whose rows the store refuses are read back from their lane's stream for their dead
letters, by the delivery: they are still there, since a batch is acknowledged only after the
store answered.

An entry that a requeue restores in part (``Entry.restore``: the store refused only some of
its rows, a crawler's pageview or its hit) keeps only the rows of those tables, so the rows
stored the first time are not stored twice. A drop stands for the pageview's or event's row:
it is kept when that row's table is restored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.envelope import Envelope
from workers.batch import dead_letters, metrics
from workers.batch.dead_letters import DeadLetter
from workers.batch.queue import Batch, Entry
from workers.pipeline import Pipeline, StepFailed
from workers.records import Drop, StoredRow
from workers.store.blocks import PreparedBatch, prepare_batch, table_of
from workers.store.schema import EVENTS, PAGEVIEWS

# The tables a drop stands in for: a dropped envelope's pageview or event was not stored.
_DROPPED_TABLES = frozenset({PAGEVIEWS.name, EVENTS.name})


@dataclass(frozen=True, slots=True)
class EnrichedBatch:
    """A claimed batch after the pipeline: a row, a drop or a dead letter for each entry."""

    batch: Batch
    rows: list[StoredRow]
    drops: list[Drop]
    letters: list[DeadLetter]
    row_entries: list[str]  # the stream entry id of each row, parallel to rows (a crawler's pageview: two)
    drop_entries: list[str]  # parallel to drops

    @property
    def crawler_hits(self) -> list[tuple[int, str, str]]:
        return metrics.crawler_hit_labels(self.rows)

    @property
    def row_tables(self) -> list[str]:
        """The table of each row, parallel to rows (a store dead letter names those refused)."""
        return [table_of(row).name for row in self.rows]


@dataclass(frozen=True, slots=True)
class WriterBatch:
    """What an enricher passes the store writer (workers.batch.delivery.PassToWriter): an
    enriched batch as the inserts that store it, without envelopes (acknowledging needs only
    entry ids and tokens)."""

    batch: Batch
    letters: list[DeadLetter]
    row_entries: list[str]
    row_tables: list[str]
    drop_entries: list[str]
    drops: list[Drop]  # for the writer's metrics (drops by reason); rows travel only in ``prepared``
    crawler_hits: list[tuple[int, str, str]]  # for the writer's metrics (metrics.crawler_hit_labels)
    prepared: PreparedBatch

    @classmethod
    def of(cls, enriched: EnrichedBatch) -> WriterBatch:
        entries = [Entry(entry.id, b"", entry.token_id) for entry in enriched.batch.entries]
        return cls(
            replace(enriched.batch, entries=entries),
            enriched.letters,
            enriched.row_entries,
            enriched.row_tables,
            enriched.drop_entries,
            enriched.drops,
            enriched.crawler_hits,
            prepare_batch(enriched.batch.id, enriched.rows, enriched.drops),
        )


def enrich(batch: Batch, pipeline: Pipeline) -> EnrichedBatch:
    """Run each entry of ``batch`` through ``pipeline``: a row, a drop, or a dead letter."""
    enriched = EnrichedBatch(batch, [], [], [], [], [])
    for entry in batch.entries:
        try:
            envelope = Envelope.from_json(entry.data)
        except (ValueError, TypeError) as error:
            enriched.letters.append(dead_letters.for_undecodable(entry.id, batch.id, entry.data, str(error)))
            continue
        try:
            outcome = pipeline.process(envelope)
        except StepFailed as error:
            enriched.letters.append(
                dead_letters.for_failed_step(entry.id, batch.id, envelope, error.step, str(error.cause))
            )
            continue
        if isinstance(outcome, Drop):
            if entry.restore is None or entry.restore & _DROPPED_TABLES:
                enriched.drops.append(outcome)
                enriched.drop_entries.append(entry.id)
        else:
            rows = [row for row in outcome if entry.restore is None or table_of(row).name in entry.restore]
            enriched.rows.extend(rows)
            enriched.row_entries.extend([entry.id] * len(rows))
    return enriched
