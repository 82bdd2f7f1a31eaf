"""The worker's crawler-hit counter: hits of stored batches by purpose and verdict, less the
rows the store refused; every purpose and verdict a series from the start. The labels travel
to the store writer in the enriched batch."""

from __future__ import annotations

import uuid

from shared.crawlers.identity import Purpose
from shared.crawlers.verification import Verdict
from tests.stores import pageview, utc
from tests.test_crawler_stats import hit
from workers.batch import metrics
from workers.batch.enrichment import EnrichedBatch, WriterBatch
from workers.batch.queue import Batch


def count(purpose: str, verdict: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "hitstream_worker_crawler_hits_total", {"purpose": purpose, "verdict": verdict}
    )
    assert value is not None
    return value


def test_every_purpose_and_verdict_is_a_series_from_the_start() -> None:
    for purpose in Purpose:
        for verdict in Verdict:
            assert count(purpose.value, verdict.value) >= 0


def test_stored_crawler_hits_are_counted_by_purpose_and_verdict_less_the_refused() -> None:
    site = str(uuid.uuid4())
    rows = [
        pageview(site, utc(2024, 3, 1)),
        hit(site, 1, "GPTBot", "verified"),
        hit(site, 1, "GPTBot", "spoofed"),
        hit(site, 2, "GPTBot", "spoofed"),
        hit(site, 1, "Googlebot", "verified"),
        hit(site, 1, "ClaudeBot", "unverifiable"),
    ]
    before = {key: count(*key) for key in [("ai_training", "verified"), ("ai_training", "spoofed"),
                                            ("search", "verified"), ("ai_training", "unverifiable")]}  # fmt: skip
    labels = WriterBatch.of(EnrichedBatch(Batch("b:metrics", [], reclaimed=False), rows, [], [], [], [])).crawler_hits
    assert labels == metrics.crawler_hit_labels(rows)
    metrics.crawler_hits_stored(labels, {2: "refused by the store", 0: "a pageview, not a hit"})
    assert {key: count(*key) - value for key, value in before.items()} == {
        ("ai_training", "verified"): 1,
        ("ai_training", "spoofed"): 1,  # one of the two was refused
        ("search", "verified"): 1,
        ("ai_training", "unverifiable"): 1,
    }
