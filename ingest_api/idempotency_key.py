"""A batch's ``Idempotency-Key``: where the first answer is kept, and what the key was used for.

The first accepted request with a key stores its answer for the idempotency window under
``shared.keys.BATCH_ANSWER`` (per token), after the fingerprint of that request. A repeat with
the same fingerprint gets the stored answer back; one with another fingerprint is refused
(ingest_api.batch: 422). Neither is queued: a 202 only covers items that were queued, never
the items of another body that was dropped.

The fingerprint is the SHA-256 of the raw body bytes and its form (JSON array or NDJSON, which
read the same bytes as other items), not of the parsed items: a client's retry resends the
bytes it sent the first time (as payment APIs such as Stripe assume; hitstream's client fixes
them before the first try), hashing them needs no decoding (0.7 ms per MiB, and only when the
header is present), and no canonical form has to be defined for what decides the items
(case-folded and repeated keys, NDJSON lines that are not JSON). The price: a retry encoded
again with other whitespace or key order is refused with 422, never taken for the first
request.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from ingest_api.handoff import StoredAnswer
from ingest_api.request import IngestRequest
from shared import keys
from shared.control.tokens import ApiToken

FINGERPRINT_LENGTH = 64  # SHA-256 hex, before the answer in the stored value
_FORMS = {False: b"json\n", True: b"ndjson\n"}


class IdempotencyKey(NamedTuple):
    answer_key: str
    fingerprint: bytes  # of the request that carries the key

    def stored(self, answer: bytes) -> StoredAnswer:
        """What to keep for the window if this request is accepted."""
        return StoredAnswer(self.answer_key, self.fingerprint + answer)

    def first_answer(self, stored_answer: bytes) -> bytes | None:
        """The stored answer when the key was first used for this same request, else None."""
        if stored_answer.startswith(b"{"):
            # Stored before fingerprints (a JSON answer alone): replayed as it was then, for
            # one window after an upgrade, rather than refusing the retry of a queued batch.
            return stored_answer
        if stored_answer[:FINGERPRINT_LENGTH] != self.fingerprint:
            return None
        return stored_answer[FINGERPRINT_LENGTH:]


def idempotency_key(request: IngestRequest, token: ApiToken, body: bytes, *, is_ndjson: bool) -> IdempotencyKey | None:
    """The request's key, or None when it sent none."""
    key = request.headers.get("idempotency-key")
    if not key:
        return None
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    fingerprint = hashlib.sha256(_FORMS[is_ndjson])
    fingerprint.update(body)
    return IdempotencyKey(
        keys.BATCH_ANSWER.format(token_id=token.id, key_hash=key_hash), fingerprint.hexdigest().encode()
    )
