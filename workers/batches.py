"""One claimed batch through the pipeline: ``process`` turns its entries into rows, drop
counts and dead letters (``Processed``), which the batch's delivery stores and acknowledges.

Neither ``Processed`` nor ``EnrichedBatch`` (what an enricher hands the store writer when
several processes enrich for one embedded store, workers.delivery) holds an envelope, so no
visitor IP travels with them. The few envelopes whose rows the store refuses are read back
from their lane's stream for their dead letters; they are still there, since a batch is
acknowledged only after the store answered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import redis

from shared import keys
from shared.envelope import Envelope
from shared.lanes import LANE_KEYS
from workers import dead_letters, metrics
from workers.dead_letters import DeadLetter
from workers.pipeline import Pipeline, StepFailed
from workers.queue import Batch, Entry
from workers.records import Drop, StoredRow
from workers.store.blocks import PreparedBatch, prepare_batch
from workers.store.store import Refusals


@dataclass(frozen=True, slots=True)
class Processed:
    batch: Batch
    rows: list[StoredRow]
    drops: list[Drop]
    letters: list[DeadLetter]
    row_entries: list[str]  # the stream entry id of each row, parallel to rows (a crawler's pageview: two)
    drop_entries: list[str]  # parallel to drops


@dataclass(frozen=True, slots=True)
class EnrichedBatch:
    """What an enricher hands the store writer (workers.delivery): a processed batch as the
    inserts that store it, without envelopes (acknowledging needs only entry ids and tokens)."""

    batch: Batch
    letters: list[DeadLetter]
    row_entries: list[str]
    drop_entries: list[str]
    drops: list[Drop]  # for the writer's metrics (drops by reason); rows travel only in ``prepared``
    crawler_hits: list[tuple[int, str, str]]  # for the writer's metrics (workers.metrics.crawler_hit_labels)
    prepared: PreparedBatch

    @classmethod
    def of(cls, processed: Processed) -> EnrichedBatch:
        entries = [Entry(entry.id, b"", entry.token_id) for entry in processed.batch.entries]
        return cls(
            replace(processed.batch, entries=entries),
            processed.letters,
            processed.row_entries,
            processed.drop_entries,
            processed.drops,
            metrics.crawler_hit_labels(processed.rows),
            prepare_batch(processed.batch.id, processed.rows, processed.drops),
        )


def process(batch: Batch, pipeline: Pipeline) -> Processed:
    """Run each entry of ``batch`` through ``pipeline``: a row, a drop, or a dead letter."""
    processed = Processed(batch, [], [], [], [], [])
    for entry in batch.entries:
        try:
            envelope = Envelope.from_json(entry.data)
        except (ValueError, TypeError) as error:
            processed.letters.append(dead_letters.for_undecodable(entry.id, batch.id, entry.data, str(error)))
            continue
        try:
            outcome = pipeline.process(envelope)
        except StepFailed as error:
            processed.letters.append(
                dead_letters.for_failed_step(entry.id, batch.id, envelope, error.step, str(error.cause))
            )
            continue
        if isinstance(outcome, Drop):
            processed.drops.append(outcome)
            processed.drop_entries.append(entry.id)
        else:
            processed.rows.extend(outcome)
            processed.row_entries.extend([entry.id] * len(outcome))
    return processed


def refused_letters(
    client: redis.Redis, batch: Batch, row_entries: list[str], drop_entries: list[str], refusals: Refusals
) -> list[DeadLetter]:
    """Dead letters (step "store") for the entries whose rows or drop counts the store refused
    (``row_entries``, ``drop_entries``: the entry id of each row and drop the store was given)."""
    # One letter per entry, though a crawler's pageview and its hit may both be refused.
    refused = {row_entries[position]: error for position, error in refusals.rows.items()}
    refused.update((drop_entries[position], error) for position, error in refusals.drops.items())
    stream = LANE_KEYS[batch.lane].stream
    letters = []
    for entry_id, error in refused.items():
        found = client.xrange(stream, entry_id, entry_id)
        fields = found[0][1] if found else None
        if fields:  # gone only if a duplicate delivery of this batch acknowledged it already
            envelope = Envelope.from_json(fields[keys.ENVELOPE_FIELD.encode()])
            letters.append(dead_letters.for_failed_step(entry_id, batch.id, envelope, "store", error))
    return letters
