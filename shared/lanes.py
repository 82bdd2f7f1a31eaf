"""The two lanes of the ingest queue: ``live`` for current traffic, ``bulk`` for replays.

Each lane is a stream of its own with its own depth cap, lease set and per-token counts
(``LaneKeys``), so a replay that fills the bulk lane slows only itself: live traffic is
admitted against the live cap and claimed first by every worker (workers.batch.queue).

A batch id names its lane (``b:<uuid>`` live, as before lanes existed, ``bulk:<uuid>``
bulk), so a lease, a re-claim, an acknowledgement and a dead letter's requeue all find the
stream the batch came from without another lookup.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from shared import keys

# The request header with which a client asks for a lane (hitstream replay sends "bulk").
LANE_HEADER = "X-Hitstream-Lane"


class Lane(enum.StrEnum):
    LIVE = "live"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class LaneKeys:
    stream: str
    leases: str
    queued_by_token: str
    batch_prefix: str


LANE_KEYS: dict[Lane, LaneKeys] = {
    Lane.LIVE: LaneKeys(keys.STREAM, keys.BATCH_LEASES, keys.QUEUED_BY_TOKEN.format(lane="live"), "b:"),
    Lane.BULK: LaneKeys(keys.BULK_STREAM, keys.BULK_BATCH_LEASES, keys.QUEUED_BY_TOKEN.format(lane="bulk"), "bulk:"),
}
LANES: tuple[Lane, ...] = tuple(Lane)  # live first: the order workers drain them in


def new_batch_id(lane: Lane) -> str:
    return f"{LANE_KEYS[lane].batch_prefix}{uuid.uuid4()}"


def lane_of_batch(batch_id: str) -> Lane:
    """The lane a batch id was made for (ids without a bulk prefix are live ones)."""
    return Lane.BULK if batch_id.startswith(LANE_KEYS[Lane.BULK].batch_prefix) else Lane.LIVE
