"""Per-site statistics for ``hitstream stats``: pageview totals and top lists, events by name,
and drop counts.

Pageview and event figures count humans only unless ``all_traffic`` is set: a row the
pipeline flagged as a bot (``is_bot``: the user-agent parser's verdict, or a known crawler,
workers.pipeline.crawlers) is left out of every total, list and chart. Crawlers have their
own section (workers.store.crawler_stats).

``query_site_stats`` runs on any store client. With the embedded engine only the worker
process that owns the chdb path can read it, so the stats command asks it there
(workers.stats_reader, answered by workers.runtime.stats_answers).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from workers.store.schema import DROP_COUNTS, EVENTS, PAGEVIEWS

# Report key -> the pageviews column (as text) it ranks. Empty values (no referrer, unknown
# country, no UTM tag, ...) are left out of the lists; they still count in the totals.
TOP_LISTS: dict[str, str] = {
    "pages": "path",
    "referrers": "referrer_host",
    "countries": "country",
    "cities": "city",
    "browsers": "browser",
    "os": "os",
    "devices": "device_type",
    "utm_sources": "ifNull(utm_source, '')",
    "utm_campaigns": "ifNull(utm_campaign, '')",
    "qr_codes": "ifNull(toString(qr_id), '')",
    "providers": "provider",
}


def query_site_stats(
    client: Client, site_id: str, date_from: date | None, date_to: date | None, limit: int, all_traffic: bool = False
) -> dict[str, Any]:
    """Stats for one site between two UTC dates, both inclusive (None: unbounded); humans
    only unless ``all_traffic``."""
    pageviews_filter, parameters = site_and_dates("timestamp", site_id, date_from, date_to)
    if not all_traffic:
        pageviews_filter += " AND NOT is_bot"
    drops_filter, _ = site_and_dates("minute", site_id, date_from, date_to)
    totals = client.query(
        f"SELECT count(), uniqExact(session_id), min(timestamp), max(timestamp) FROM {PAGEVIEWS.name}"
        f" WHERE {pageviews_filter}",
        parameters=parameters,
    ).result_rows[0]
    report: dict[str, Any] = {
        "site_id": site_id,
        "from": date_from.isoformat() if date_from else None,
        "to": date_to.isoformat() if date_to else None,
        "traffic": "all" if all_traffic else "human",
        "pageviews": totals[0],
        "visitors": totals[1],
    }
    report.update(top_lists(client, PAGEVIEWS.name, TOP_LISTS, "pageviews", pageviews_filter, parameters, limit))
    count, _, first, last = totals
    report["pageviews_over_time"] = counts_over_time(
        client, PAGEVIEWS.name, pageviews_filter, parameters, count, first, last
    )
    events = client.query(
        f"SELECT name, count() AS events FROM {EVENTS.name} WHERE {pageviews_filter}"
        f" GROUP BY name ORDER BY events DESC, name LIMIT {int(limit)}",
        parameters=parameters,
    )
    # Same shape as the top lists (the count is under "pageviews" there too).
    report["events"] = [{"value": name, "pageviews": count} for name, count in events.result_rows]
    drops = client.query(
        f"SELECT reason, sum(count) AS dropped FROM {DROP_COUNTS.name}"
        f" WHERE {drops_filter}"
        " GROUP BY reason ORDER BY dropped DESC, reason",
        parameters=parameters,
    )
    report["drops"] = {reason: dropped for reason, dropped in drops.result_rows}
    return report


def top_lists(
    client: Client,
    table: str,
    lists: dict[str, str],
    counted: str,
    where: str,
    parameters: dict[str, Any],
    limit: int,
) -> dict[str, list[dict[str, Any]]]:
    """The top ``limit`` values of each of ``lists`` (name: column expression) in ``table``,
    each with its row count under the key ``counted``. One scan for every list: ARRAY JOIN
    turns each row into one (list, value) pair per list, and LIMIT BY keeps the top of each."""
    names = ", ".join(f"'{name}'" for name in lists)
    values = ", ".join(f"toString({expression})" for expression in lists.values())
    result = client.query(
        f"SELECT list, value, count() AS counted FROM {table}"
        f" ARRAY JOIN [{names}] AS list, [{values}] AS value"
        f" WHERE {where} AND value != ''"
        " GROUP BY list, value"
        " ORDER BY list, counted DESC, value"
        f" LIMIT {int(limit)} BY list",
        parameters=parameters,
    )
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in lists}
    for name, value, count in result.result_rows:
        found[name].append({"value": value, counted: count})
    return found


# Chart resolution by the time the pageviews span: hours up to two days, days up to a quarter,
# then months (so a chart has at most ~90 bars). Bucket function and WITH FILL step per unit.
_TIME_UNITS: tuple[tuple[str, timedelta | None, str, str], ...] = (
    ("hour", timedelta(days=2), "toStartOfHour", "INTERVAL 1 HOUR"),
    ("day", timedelta(days=92), "toDate", "1"),
    ("month", None, "toStartOfMonth", "INTERVAL 1 MONTH"),
)


def counts_over_time(
    client: Client, table: str, where: str, parameters: dict[str, Any], count: int, first: datetime, last: datetime
) -> dict[str, Any]:
    """Rows of ``table`` per hour, day or month (by the span from ``first`` to ``last``), gaps
    filled with 0: ``{"unit": ..., "points": [[start as ISO text in UTC, rows], ...]}``."""
    unit, _, bucket, step = next(item for item in _TIME_UNITS if item[1] is None or last - first <= item[1])
    if count == 0:
        return {"unit": unit, "points": []}
    result = client.query(
        f"SELECT {bucket}(timestamp) AS start, count() FROM {table} WHERE {where}"
        f" GROUP BY start ORDER BY start WITH FILL STEP {step}",
        parameters=parameters,
    )
    # Starts are UTC (the column's time zone); hours may come back with or without tzinfo.
    points = [[_utc_text(start), pageviews] for start, pageviews in result.result_rows]
    return {"unit": unit, "points": points}


def _utc_text(start: date) -> str:
    if isinstance(start, datetime):
        return start.replace(tzinfo=None).isoformat(timespec="minutes")
    return start.isoformat()


def site_and_dates(
    time_column: str, site_id: str, date_from: date | None, date_to: date | None
) -> tuple[str, dict[str, Any]]:
    """A WHERE condition for one site and date range, and its query parameters."""
    conditions = ["site_id = {site_id:UUID}"]
    parameters: dict[str, Any] = {"site_id": site_id}
    if date_from is not None:
        conditions.append(f"toDate({time_column}) >= {{date_from:Date}}")
        parameters["date_from"] = date_from
    if date_to is not None:
        conditions.append(f"toDate({time_column}) <= {{date_to:Date}}")
        parameters["date_to"] = date_to
    return " AND ".join(conditions), parameters
