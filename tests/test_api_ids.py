"""Generated ids: canonical random UUIDs, never repeated, also not across a fork (the random
bytes are read ahead in a pool, which a forked child must not share with its parent)."""

from __future__ import annotations

import os
import uuid

from ingest_api.ids import new_uuid4


def test_ids_are_canonical_version_4_uuids_and_unique() -> None:
    ids = [new_uuid4() for _ in range(5000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert text == str(parsed)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    new_uuid4()  # the pool now holds unread bytes that the child inherits
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(writing, " ".join(new_uuid4() for _ in range(3)).encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    with os.fdopen(reading) as pipe:
        childs = set(pipe.read().split())
    parents = {new_uuid4() for _ in range(3)}
    assert len(childs) == 3 and not childs & parents
