"""One claimed batch through the pipeline: ``process`` turns its entries into rows, drop
counts and dead letters (``Processed``), which the batch's delivery stores and acknowledges.

``Processed`` holds no envelope (so no visitor IP): it travels as is to the store writer
when several processes enrich for one embedded store (workers.delivery). The few envelopes
whose rows the store refuses are read back from their lane's stream for their dead letters;
they are still there, since a batch is acknowledged only after the store answered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import redis

from shared import keys
from shared.envelope import Envelope
from shared.lanes import LANE_KEYS
from workers import dead_letters
from workers.dead_letters import DeadLetter
from workers.pipeline import Pipeline, StepFailed
from workers.queue import Batch, Entry
from workers.records import Drop, PageviewRow
from workers.store.store import Refusals


@dataclass(frozen=True, slots=True)
class Processed:
    batch: Batch
    rows: list[PageviewRow]
    drops: list[Drop]
    letters: list[DeadLetter]
    row_entries: list[str]  # the stream entry id of each row, parallel to rows
    drop_entries: list[str]  # parallel to drops

    def without_envelopes(self) -> Processed:
        """The same batch without its entries' envelopes (acknowledging needs only ids and tokens)."""
        entries = [Entry(entry.id, b"", entry.token_id) for entry in self.batch.entries]
        return replace(self, batch=replace(self.batch, entries=entries))


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
            processed.rows.append(outcome)
            processed.row_entries.append(entry.id)
    return processed


def refused_letters(client: redis.Redis, processed: Processed, refusals: Refusals) -> list[DeadLetter]:
    """Dead letters (step "store") for the entries whose rows or drop counts the store refused."""
    refused = [(processed.row_entries[position], error) for position, error in refusals.rows.items()]
    refused += [(processed.drop_entries[position], error) for position, error in refusals.drops.items()]
    stream = LANE_KEYS[processed.batch.lane].stream
    letters = []
    for entry_id, error in refused:
        found = client.xrange(stream, entry_id, entry_id)
        if found:  # gone only if a duplicate delivery of this batch acknowledged it already
            envelope = Envelope.from_json(found[0][1][keys.ENVELOPE_FIELD.encode()])
            letters.append(dead_letters.for_failed_step(entry_id, processed.batch.id, envelope, "store", error))
    return letters
