"""Prometheus metrics of one API process.

Each process keeps its own registry (no multiprocess directory): with ``--workers N`` a scrape
of ``/metrics`` sees the process that accepted the connection, so scrape each process (one
per port or container) or sum what you see. The queue figures, per lane, and the batches
waiting for the store writer (shared.backlog) are read from Redis at scrape time and are the
same from every process.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.backlog import Backlog
from shared.lanes import LANES

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Counted in a plain dict (every request counts: a labelled prometheus_client Counter
        # cost twice as much) and turned into the counter family when scraped.
        self._answered: collections.Counter[tuple[str, int]] = collections.Counter()
        self.registry.register(self)
        self.handoff_seconds = Histogram(
            "hitstream_api_handoff_seconds",
            "Time from writing a hand-off call (the pageviews of concurrent requests) to Redis "
            "until Redis answered it, or the call failed.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.backlog: Backlog | None = None  # set before each scrape; None: Redis did not answer
        # Read at scrape time (shared.redis_safety): 1 or 0, NaN when Redis did not say.
        self.redis_aof_enabled = Gauge(
            "hitstream_redis_aof_enabled",
            "1 when Redis writes an AOF; 0 means a Redis restart loses every queued pageview.",
            registry=self.registry,
        )
        self.redis_evicting = Gauge(
            "hitstream_redis_evicting",
            "1 when Redis's maxmemory-policy evicts keys (tokens, sites, queued pageviews).",
            registry=self.registry,
        )

    def count_request(self, route: str, status: int) -> None:
        self._answered[route, status] += 1

    def collect(self) -> Iterator[Metric]:
        """The request counter, the queue figures per lane and the batches waiting for the store
        writer, for the registry (a prometheus_client custom collector)."""
        requests = CounterMetricFamily(
            "hitstream_api_requests", "HTTP requests answered, by route and status code.", labels=["route", "status"]
        )
        for (route, status), count in sorted(self._answered.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        yield from self._queue_families()
        yield from self._enriched_families()

    def _queue_families(self) -> Iterator[Metric]:
        families: tuple[GaugeMetricFamily | CounterMetricFamily, ...] = (
            GaugeMetricFamily(
                "hitstream_queue_depth", "Pageviews in the lane's stream (waiting or being processed).", labels=["lane"]
            ),
            GaugeMetricFamily("hitstream_queue_waiting", "Pageviews no batch has claimed yet.", labels=["lane"]),
            GaugeMetricFamily(
                "hitstream_queue_oldest_waiting_age_seconds",
                "Age of the oldest pageview no batch has claimed yet (0 when none waits).",
                labels=["lane"],
            ),
            CounterMetricFamily(
                "hitstream_queue_added", "Pageviews ever appended to the lane's stream.", labels=["lane"]
            ),
            CounterMetricFamily(
                "hitstream_queue_acknowledged",
                "Pageviews ever stored (or dead-lettered) and removed from the lane's stream.",
                labels=["lane"],
            ),
        )
        for lane in LANES:
            figures = self.backlog.lanes[lane] if self.backlog is not None else None
            values = (
                (
                    figures.depth,
                    figures.waiting,
                    figures.oldest_waiting_age_seconds or 0.0,
                    figures.added_total,
                    figures.acknowledged_total,
                )
                if figures is not None
                else (float("nan"),) * len(families)  # unknown, not "empty"
            )
            for family, value in zip(families, values, strict=True):
                family.add_metric([lane], value)
        yield from families

    def _enriched_families(self) -> Iterator[Metric]:
        """Batches enrichers handed to the store writer and it has not stored yet (0 without
        enrichers: a ClickHouse server, or one worker process on an embedded store)."""
        families = (
            GaugeMetricFamily("hitstream_enriched_batches", "Enriched batches waiting for the store writer."),
            GaugeMetricFamily(
                "hitstream_enriched_pageviews", "Pageviews in the enriched batches waiting for the store writer."
            ),
            GaugeMetricFamily(
                "hitstream_enriched_oldest_age_seconds",
                "Time since the longest-waiting batch for the store writer was claimed (0 when none waits).",
            ),
        )
        enriched = self.backlog.enriched if self.backlog is not None else None
        values = (
            (enriched.batches, enriched.pageviews, enriched.oldest_age_seconds or 0.0)
            if enriched is not None
            else (float("nan"),) * len(families)  # unknown, not "empty"
        )
        for family, value in zip(families, values, strict=True):
            family.add_metric([], value)
        yield from families

    def render(self) -> bytes:
        return generate_latest(self.registry)
