"""The crawler section of ``hitstream stats``: hits of known crawlers on one site, by crawler
(with its operator, purpose, verdicts and top paths), operator, purpose and resource type,
and over time.

Read from ``crawler_hits`` (one row per crawler request: pageviews, events and AI fetches,
workers.records.CrawlerHitRow), whatever ``--all-traffic`` says: these are never humans.
A hit whose crawler the table no longer knew when the worker ran (an AI fetch, empty name)
counts in the totals and verdicts, not in the by-crawler list.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from clickhouse_connect.driver.client import Client

from workers.store.schema import CRAWLER_HITS
from workers.store.stats import counts_over_time, site_and_dates, top_lists

VERDICTS = ("verified", "spoofed", "unverifiable")
# Report key -> the crawler_hits column it ranks by hits.
TOP_LISTS: dict[str, str] = {"operators": "operator", "purposes": "purpose", "resource_types": "resource_type"}

_VERDICT_COUNTS = ", ".join(f"countIf(verdict = '{verdict}')" for verdict in VERDICTS)


def query_crawler_stats(
    client: Client, site_id: str, date_from: date | None, date_to: date | None, limit: int
) -> dict[str, Any]:
    """The crawler section for one site between two UTC dates, both inclusive (None: unbounded)."""
    where, parameters = site_and_dates("timestamp", site_id, date_from, date_to)
    count, *verdicts, first, last = client.query(
        f"SELECT count(), {_VERDICT_COUNTS}, min(timestamp), max(timestamp) FROM {CRAWLER_HITS.name} WHERE {where}",
        parameters=parameters,
    ).result_rows[0]
    section: dict[str, Any] = {
        "hits": count,
        "verdicts": dict(zip(VERDICTS, verdicts, strict=True)),
        "crawlers": _by_crawler(client, where, parameters, limit),
    }
    section.update(top_lists(client, CRAWLER_HITS.name, TOP_LISTS, "hits", where, parameters, limit))
    section["hits_over_time"] = counts_over_time(client, CRAWLER_HITS.name, where, parameters, count, first, last)
    return section


def _by_crawler(client: Client, where: str, parameters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    crawlers = client.query(
        f"SELECT crawler, any(operator), any(purpose), any(ai), count() AS hits, {_VERDICT_COUNTS}"
        f" FROM {CRAWLER_HITS.name} WHERE {where} AND crawler != ''"
        f" GROUP BY crawler ORDER BY hits DESC, crawler LIMIT {int(limit)}",
        parameters=parameters,
    ).result_rows
    listed = [
        {
            "value": name,
            "operator": operator,
            "purpose": purpose,
            "ai": ai,
            "hits": hits,
            **dict(zip(VERDICTS, verdicts, strict=True)),
            "top_paths": [],
        }
        for name, operator, purpose, ai, hits, *verdicts in crawlers
    ]
    if not listed:
        return listed
    paths = client.query(
        f"SELECT crawler, path, count() AS hits FROM {CRAWLER_HITS.name}"
        f" WHERE {where} AND crawler IN {{crawlers:Array(String)}}"
        f" GROUP BY crawler, path ORDER BY crawler, hits DESC, path LIMIT {int(limit)} BY crawler",
        parameters={**parameters, "crawlers": [entry["value"] for entry in listed]},
    ).result_rows
    by_name = {entry["value"]: entry for entry in listed}
    for name, path, hits in paths:
        by_name[name]["top_paths"].append({"value": path, "hits": hits})
    return listed
