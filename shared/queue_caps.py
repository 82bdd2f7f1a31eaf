"""The lanes' caps against Redis's memory: derived from ``maxmemory`` when the operator did not
set them, and a warning when the ones set can outgrow it.

A full lane answers 503 (backpressure), but only if Redis still has room for the pageviews
below its cap: with ``maxmemory`` set (and ``noeviction``, which start-up requires) Redis
refuses writes once it is full, and the defaults (1,000,000 live + 2,000,000 bulk pageviews,
~3 GB at the figure below) outgrow most Redis servers. So at start, where the API and the
workers check Redis (shared.redis_safety reads ``maxmemory`` with INFO memory):

- a cap whose variable is unset (HITSTREAM_QUEUE_MAX_DEPTH, HITSTREAM_BULK_QUEUE_MAX_DEPTH)
  becomes its lane's part (1/3 live, 2/3 bulk: the defaults' ratio) of the pageviews that fit
  in ``QUEUE_MEMORY_FRACTION`` of ``maxmemory`` at ``BYTES_PER_QUEUED_PAGEVIEW`` each, never
  more than the default;
- caps set explicitly are kept, with one warning line when both lanes full would take more
  than ``maxmemory``;
- without ``maxmemory`` (0: no limit, or not reported) the defaults stand.
"""

from __future__ import annotations

import dataclasses
import logging

from shared.config import Settings

log = logging.getLogger(__name__)

# Redis memory one queued pageview takes. Measured with bench/queue_memory.py (Redis 7.0, AOF
# on, 2026-12-06): 200,000 realistic pageviews (bench.api_bench's body, a 701-byte envelope)
# posted through the API's batch endpoint grew INFO memory's used_memory by 825 bytes each with
# API-made page_ids, 1,023 with client-chosen ones (their seen key); rounded up to 1 KiB for
# longer URLs, referrers and user agents.
BYTES_PER_QUEUED_PAGEVIEW = 1024
# The part of maxmemory both lanes full may take. The rest holds what else Redis keeps: seen
# keys (~200 bytes per client-chosen id, for HITSTREAM_IDEMPOTENCY_WINDOW after the pageview
# was stored), stored batch answers, tokens, sites, rate buckets, the batches waiting for the
# store writer and RQ's jobs.
QUEUE_MEMORY_FRACTION = 0.5

LIVE_CAP_VARIABLE = "HITSTREAM_QUEUE_MAX_DEPTH"
BULK_CAP_VARIABLE = "HITSTREAM_BULK_QUEUE_MAX_DEPTH"
_DEFAULTS = Settings()


def derived_caps(maxmemory: int) -> tuple[int, int]:
    """The live and bulk caps for a Redis whose maxmemory is ``maxmemory`` bytes (above 0)."""
    pageviews = int(maxmemory * QUEUE_MEMORY_FRACTION) // BYTES_PER_QUEUED_PAGEVIEW
    live, bulk = _DEFAULTS.queue_max_depth, _DEFAULTS.bulk_queue_max_depth
    return (
        max(1, min(live, pageviews * live // (live + bulk))),
        max(1, min(bulk, pageviews * bulk // (live + bulk))),
    )


def effective_settings(settings: Settings, maxmemory: int | None) -> Settings:
    """``settings`` with each cap its variable left unset derived from ``maxmemory``."""
    if not maxmemory:
        return settings
    live, bulk = derived_caps(maxmemory)
    return dataclasses.replace(
        settings,
        queue_max_depth=settings.queue_max_depth if LIVE_CAP_VARIABLE in settings.variables_set else live,
        bulk_queue_max_depth=settings.bulk_queue_max_depth if BULK_CAP_VARIABLE in settings.variables_set else bulk,
    )


def oversized_caps(settings: Settings, maxmemory: int | None) -> str | None:
    """Why the caps in force (``effective_settings``) can outgrow ``maxmemory``, in one line;
    None when they cannot, or when maxmemory is not set."""
    if not maxmemory:
        return None
    effective = effective_settings(settings, maxmemory)
    pageviews = effective.queue_max_depth + effective.bulk_queue_max_depth
    if pageviews * BYTES_PER_QUEUED_PAGEVIEW <= maxmemory:
        return None
    caps = ", ".join(
        f"{variable}={value} ({'set' if variable in settings.variables_set else 'derived'})"
        for variable, value in (
            (LIVE_CAP_VARIABLE, effective.queue_max_depth),
            (BULK_CAP_VARIABLE, effective.bulk_queue_max_depth),
        )
    )
    live, bulk = derived_caps(maxmemory)
    return (
        f"the lane caps {caps} let {pageviews:,} pageviews queue, ~{_mib(pageviews * BYTES_PER_QUEUED_PAGEVIEW)} "
        f"at ~{BYTES_PER_QUEUED_PAGEVIEW} bytes each, more than Redis's maxmemory ({_mib(maxmemory)}): Redis "
        f"would refuse writes before the lanes answer 503; lower them (unset, they would be {live} and {bulk}) "
        "or raise maxmemory"
    )


def check_caps(settings: Settings, maxmemory: int | None) -> Settings:
    """At start: the settings with the caps in force, after one warning line if they can
    outgrow maxmemory."""
    warning = oversized_caps(settings, maxmemory)
    if warning is not None:
        log.warning("%s", warning)
    return effective_settings(settings, maxmemory)


def cap_variables(settings: Settings) -> dict[str, str]:
    """The caps of ``settings`` as the variables that carry them to processes that read their
    settings from the environment (the API's, which uvicorn starts)."""
    return {LIVE_CAP_VARIABLE: str(settings.queue_max_depth), BULK_CAP_VARIABLE: str(settings.bulk_queue_max_depth)}


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MiB"
