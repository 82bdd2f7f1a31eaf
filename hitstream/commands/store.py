"""``hitstream migrate`` and ``hitstream stats``.

The store modules are imported inside the commands: they load clickhouse-connect and Arrow
(~55 MB), which every other sub-command, ``hitstream api`` above all, does without (and so
is ``rich``, which only the text report's chart uses). ``hitstream stats`` loads them only
when it reads the store itself (a server, or an embedded store no worker owns): asking the
worker that owns an embedded store takes Redis alone (workers.stats_reader).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import orjson
import redis

from hitstream.arguments import DOMAIN
from hitstream.terminal import json_for_terminal, printable
from shared.config import load_settings
from shared.redis_client import redis_client
from shared.storable import TIME_RANGES_MS

LIST_TITLES = {
    "pages": "Pages",
    "referrers": "Referrers",
    "countries": "Countries",
    "cities": "Cities",
    "browsers": "Browsers",
    "os": "Operating systems",
    "devices": "Devices",
    "utm_sources": "UTM sources",
    "utm_campaigns": "UTM campaigns",
    "qr_codes": "QR codes",
    "providers": "Providers",
    "events": "Events (name)",
}
CRAWLER_LIST_TITLES = {
    "operators": "Crawler operators",
    "purposes": "Crawler purposes",
    "resource_types": "Resource types",
}


def _cluster_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from workers.store.schema import check_cluster_name

    try:
        return None if value is None else check_cluster_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.option(
    "--cluster",
    metavar="NAME",
    callback=_cluster_name,
    help="Create replicated tables ON CLUSTER NAME, with Distributed tables under the plain names.",
)
@click.option("--print", "print_only", is_flag=True, help="Print the DDL and touch nothing.")
def migrate(cluster: str | None, print_only: bool) -> None:
    """Create or upgrade the ClickHouse schema (HITSTREAM_CLICKHOUSE_URL). Safe to repeat."""
    from workers.store.migrations import migration_ddl
    from workers.store.store import open_store
    from workers.store.unavailable import StoreUnavailable

    if print_only:
        click.echo(";\n\n".join(migration_ddl(cluster)) + ";")
        return
    settings = load_settings()
    try:
        store = open_store(settings.clickhouse_url)
        try:
            applied = store.migrate(cluster)
        finally:
            store.close()
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    for label in applied:
        click.echo(f"applied {label}")
    if not applied:
        click.echo("schema is up to date")


# How long ``hitstream stats`` waits, by default, for Redis and for the worker that owns an
# embedded store before it says why it has no answer (workers.stats_reader).
STATS_WAIT_SECONDS = 2.0
# Reports group by the store's Date type: days outside its range cannot be asked for.
FIRST_DAY, LAST_DAY = (datetime.fromtimestamp(ms / 1000, UTC).date() for ms in TIME_RANGES_MS["Date"])
MAX_LIMIT = 10_000


def _day(ctx: click.Context, param: click.Parameter, value: datetime | None) -> date | None:
    if value is None:
        return None
    if not FIRST_DAY <= value.date() <= LAST_DAY:
        raise click.BadParameter(f"{value.date()} is outside the days the store can hold ({FIRST_DAY} to {LAST_DAY})")
    return value.date()


@click.command()
@click.option("--site", "domain", type=DOMAIN, required=True, metavar="DOMAIN", help="The site's domain.")
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), callback=_day, help="First day (UTC), YYYY-MM-DD.")
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), callback=_day, help="Last day (UTC), YYYY-MM-DD.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=10, show_default=True, help="Rows per top list.")
@click.option(
    "--all-traffic",
    is_flag=True,
    help="Count bots and crawlers in the pageview and event figures too (default: humans only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0.5),
    default=STATS_WAIT_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="Wait at most this long for Redis and for the worker that owns an embedded store, then say why.",
)
def stats(
    domain: str, first: date | None, last: date | None, limit: int, all_traffic: bool, as_json: bool, wait: float
) -> None:
    """Pageviews, visitors, top lists and drops for one site, humans only unless --all-traffic,
    and the crawlers that fetched it (control characters in stored text are printed escaped)."""
    from shared.control.sites import site_for_domain
    from workers.stats_reader import read_site_stats
    from workers.store.unavailable import StoreUnavailable

    if first and last and first > last:
        raise click.BadParameter("must not be before --from", param_hint="--to")
    settings = load_settings()
    # Each Redis command is bounded, and not retried: a Redis busy past the budget is named.
    client = redis_client(settings.redis_url, timeout_seconds=wait)
    try:
        site = site_for_domain(client, domain)
        if site is None:
            raise click.BadParameter(f"no site with domain {domain!r}", param_hint="--site")
        report = read_site_stats(settings.clickhouse_url, client, site.id, first, last, limit, wait, all_traffic)
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    except redis.TimeoutError:
        raise click.ClickException(
            f"Redis at HITSTREAM_REDIS_URL did not answer within {wait:g} s; try again shortly"
        ) from None
    except redis.RedisError as error:
        raise click.ClickException(f"cannot reach Redis at HITSTREAM_REDIS_URL: {error}") from None
    finally:
        client.close()
    over_time = report.pop("pageviews_over_time")  # for the chart only: the JSON output stays as it was
    geo_credit = _geo_credit(settings.geoip_city_db)
    if as_json:
        click.echo(json_for_terminal(orjson.dumps({"site": site.domain, **report}).decode()))
        if geo_credit:
            click.echo(geo_credit, err=True)  # the licence's attribution, off the JSON document
        return
    period = " ".join(part for part in (first and f"from {first}", last and f"to {last}") if part) or "all time"
    traffic = "all traffic, bots included" if all_traffic else "humans only; --all-traffic counts bots too"
    click.echo(
        f"{site.domain}  ({period})\nTraffic    {traffic}\n"
        f"Pageviews  {report['pageviews']}\nVisitors   {report['visitors']}\n"
    )
    from rich.console import Console

    from hitstream.charts import series_chart

    console = Console(highlight=False)
    console.print(series_chart("Pageviews", over_time["unit"], over_time["points"]))
    click.echo(format_lists(report))
    crawlers = report["crawlers"]
    click.echo()
    console.print(
        series_chart("Crawler hits", crawlers["hits_over_time"]["unit"], crawlers["hits_over_time"]["points"])
    )
    click.echo(format_crawlers(crawlers))
    if geo_credit:
        click.echo(f"\n{geo_credit}")


def _geo_credit(city_db: Path | None) -> str:
    """Which City database placed the visitors, and the credit its licence asks for ("" when
    none is configured or it cannot be read)."""
    from hitstream.geoip_update import UnusableDatabase, inspect_database

    if city_db is None:
        return ""
    try:
        return f"Geo: {inspect_database(city_db).describe()}"
    except UnusableDatabase:
        return ""


def format_lists(report: dict[str, Any]) -> str:
    """The top lists and the drops, as text tables."""
    lines: list[str] = []
    for key, title in LIST_TITLES.items():
        lines.extend([*_table(title, [(printable(item["value"]), item["pageviews"]) for item in report[key]]), ""])
    lines.extend(_table("Dropped (reason)", list(report["drops"].items())))
    return "\n".join(lines)


def format_crawlers(section: dict[str, Any]) -> str:
    """The crawler section: totals by verdict, each crawler with its verdicts and top paths,
    then hits by operator, purpose and resource type, as text tables."""
    verdicts = ", ".join(f"{verdict} {count}" for verdict, count in section["verdicts"].items())
    lines = [f"Crawler hits  {section['hits']}  ({verdicts})", ""]
    columns = ("Operator", "Purpose", "Hits", *(verdict.capitalize() for verdict in section["verdicts"]))
    rows = [
        (
            printable(entry["value"]),
            printable(entry["operator"]),
            entry["purpose"],
            *(str(entry[key]) for key in ("hits", *section["verdicts"])),
        )
        for entry in section["crawlers"]
    ]
    lines.extend([*_grid("Crawler", columns, rows), ""])
    for entry in section["crawlers"]:
        title = f"Top paths of {printable(entry['value'])}"
        lines.extend(
            [*_table(title, [(printable(path["value"]), path["hits"]) for path in entry["top_paths"]], "Hits"), ""]
        )
    for key, title in CRAWLER_LIST_TITLES.items():
        lines.extend([*_table(title, [(printable(item["value"]), item["hits"]) for item in section[key]], "Hits"), ""])
    return "\n".join(lines).rstrip("\n")


def _grid(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A table whose first three columns (name, operator, purpose) are left-aligned and the rest
    (counts) right-aligned."""
    header = (title, *columns)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        aligned = [
            f"{cell:<{width}}" if index < 3 else f"{cell:>{width}}"
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(aligned).rstrip()

    return [line(header), *(line(row) for row in rows)] if rows else [line(header), "(none)"]


def _table(title: str, rows: list[tuple[str, int]], count_title: str = "Pageviews") -> list[str]:
    width = max([len(title), *(len(value) for value, _ in rows)])
    lines = [f"{title:<{width}}  {count_title:>9}"]
    lines.extend(f"{value:<{width}}  {count:>9}" for value, count in rows)
    if not rows:
        lines.append("(none)")
    return lines
