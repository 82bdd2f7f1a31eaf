"""Dead letters: envelopes that broke a pipeline step or whose row the store refused, kept for
an operator to inspect.

``keys.DEAD_LETTERS`` is a hash: stream entry id -> record JSON. Keying by the entry id
makes recording idempotent: a batch retried after a crash rewrites the same dead letters
instead of adding copies. A record never holds the raw visitor IP: the envelope is stored
without it and the IP is scrubbed from the error text.

One envelope can be several rows (a known crawler's pageview or event and its crawler hit),
and the store may refuse only some of them: a store dead letter names the tables it refused
(``refused_tables``), and its requeue restores only those (keys.RESTORE_FIELD), so the rows
stored the first time are not stored again. A record without them (another step's, a refused
drop count's, one written before they were recorded) restores every row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from redis.typing import EncodableT, FieldT

from shared import keys
from shared.control.changes import text
from shared.envelope import Envelope
from shared.lanes import LANE_KEYS, Lane, lane_of_batch
from workers.redaction import without_ip


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # the stream entry id the envelope had
    failed_at: str  # ISO 8601, UTC
    step: str  # the pipeline step that failed, "decode", or "store" (the store refused the row)
    error: str
    site_id: str | None
    batch_id: str
    envelope: dict[str, Any] | None  # visitor_ip removed; None if the entry was not JSON
    # Step "store": the tables whose rows of this entry the store refused, sorted; None: all.
    refused_tables: list[str] | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        return cls(**orjson.loads(data))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _letter_id(entry_id: str, batch_id: str) -> str:
    """The entry id, named with its lane outside the live one: the two lanes' streams make
    their ids independently, so a live and a bulk entry can share one."""
    lane = lane_of_batch(batch_id)
    return entry_id if lane is Lane.LIVE else f"{lane}:{entry_id}"


def for_failed_step(entry_id: str, batch_id: str, envelope: Envelope, step: str, error: str) -> DeadLetter:
    """A dead letter for an envelope that a pipeline step could not process."""
    return DeadLetter(
        id=_letter_id(entry_id, batch_id),
        failed_at=_now(),
        step=step,
        error=without_ip(error, envelope.visitor_ip),
        site_id=envelope.site_id,
        batch_id=batch_id,
        envelope=envelope.without_ip(),
    )


def for_refused_rows(entry_id: str, batch_id: str, envelope: Envelope, tables: set[str], error: str) -> DeadLetter:
    """A dead letter (step "store") for an envelope whose rows in ``tables`` the store refused
    (no tables: its drop count)."""
    letter = for_failed_step(entry_id, batch_id, envelope, "store", error)
    return replace(letter, refused_tables=sorted(tables)) if tables else letter


def for_undecodable(entry_id: str, batch_id: str, data: bytes, error: str) -> DeadLetter:
    """A dead letter for a stream entry that is not a valid envelope."""
    try:
        values = orjson.loads(data)
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        return DeadLetter(_letter_id(entry_id, batch_id), _now(), "decode", error, None, batch_id, None)
    ip = values.pop("visitor_ip", None)
    site_id = values.get("site_id")
    return DeadLetter(
        id=_letter_id(entry_id, batch_id),
        failed_at=_now(),
        step="decode",
        error=without_ip(error, ip),
        site_id=site_id if isinstance(site_id, str) else None,
        batch_id=batch_id,
        envelope={**values, "visitor_ip": None},
    )


def record(pipe: redis.client.Pipeline, letters: list[DeadLetter]) -> None:
    """Queue the HSET of ``letters`` on ``pipe`` (the caller's transaction)."""
    if letters:
        pipe.hset(keys.DEAD_LETTERS, mapping={letter.id: letter.to_json() for letter in letters})


def list_dead_letters(client: redis.Redis) -> list[DeadLetter]:
    """All dead letters, oldest first (entry ids are time ordered)."""
    records = [DeadLetter.from_json(data) for data in client.hvals(keys.DEAD_LETTERS)]
    return sorted(records, key=lambda letter: tuple(int(part) for part in letter.id.rpartition(":")[2].split("-")))


def count(client: redis.Redis) -> int:
    return int(client.hlen(keys.DEAD_LETTERS))


def _selected(client: redis.Redis, ids: list[str] | None) -> dict[str, bytes | str]:
    """The stored records for ``ids`` (all of them for None); unknown ids are left out."""
    if ids is None:
        return {text(key): value for key, value in client.hgetall(keys.DEAD_LETTERS).items()}
    values = client.hmget(keys.DEAD_LETTERS, ids) if ids else []
    return {dead_id: value for dead_id, value in zip(ids, values, strict=True) if value is not None}


def requeue(client: redis.Redis, ids: list[str] | None) -> list[str]:
    """Append the stored envelopes to the stream of the lane they came from (their batch id
    names it) again and forget their dead letters. They count for no token's share: an
    operator's requeue is not a client's backlog.

    The envelope goes back without its visitor IP (the pipeline skips geo and IP rules), and
    with the tables the store refused, if it named them (only their rows are stored again).
    Records without a decodable envelope cannot be requeued and stay. Returns requeued ids.
    """
    requeued: list[str] = []
    with client.pipeline(transaction=True) as pipe:
        for dead_id, data in _selected(client, ids).items():
            letter = DeadLetter.from_json(data)
            if letter.envelope is None:
                continue
            stream = LANE_KEYS[lane_of_batch(letter.batch_id)].stream
            fields: dict[FieldT, EncodableT] = {keys.ENVELOPE_FIELD: orjson.dumps(letter.envelope)}
            if letter.refused_tables:
                fields[keys.RESTORE_FIELD] = ",".join(letter.refused_tables).encode()
            pipe.xadd(stream, fields)
            pipe.hdel(keys.DEAD_LETTERS, dead_id)
            requeued.append(dead_id)
        pipe.execute()
    return requeued


def purge(client: redis.Redis, ids: list[str] | None) -> int:
    """Delete dead letters (all of them for None); returns how many were deleted."""
    if ids is None:
        with client.pipeline(transaction=True) as pipe:
            pipe.hlen(keys.DEAD_LETTERS)
            pipe.delete(keys.DEAD_LETTERS)
            deleted, _ = pipe.execute()
        return int(deleted)
    return int(client.hdel(keys.DEAD_LETTERS, *ids)) if ids else 0
