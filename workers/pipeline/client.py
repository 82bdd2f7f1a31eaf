"""The client context step: referrer and its host, language, screen and viewport sizes.

It runs before the spam step, which reads the referrer host it sets. Referrers come from a
few hundred hosts and normalising one costs several microseconds, so hosts are cached per
referrer string in a bounded LRU cache.
"""

from __future__ import annotations

import functools

from shared.hosts import referrer_host
from workers.pipeline.visit import Visit

CACHE_SIZE = 16_384
cached_referrer_host = functools.lru_cache(maxsize=CACHE_SIZE)(referrer_host)


def copy_client_context(visit: Visit) -> None:
    envelope, row = visit.envelope, visit.row
    row.referrer = envelope.referrer or ""
    row.referrer_host = cached_referrer_host(row.referrer)
    row.language = envelope.language or ""
    row.screen_width = envelope.screen_width or 0
    row.screen_height = envelope.screen_height or 0
    row.viewport_width = envelope.viewport_width or 0
    row.viewport_height = envelope.viewport_height or 0
