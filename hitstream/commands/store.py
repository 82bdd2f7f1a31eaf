"""``hitstream migrate`` and ``hitstream stats``.

The store modules are imported inside the commands: they load clickhouse-connect and Arrow
(~55 MB), which every other sub-command, ``hitstream api`` above all, does without (and so
is ``rich``, which only the text report's chart uses).
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
    from workers.store.store import StoreUnavailable, open_store

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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0.5),
    default=STATS_WAIT_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="Wait at most this long for Redis and for the worker that owns an embedded store, then say why.",
)
def stats(domain: str, first: date | None, last: date | None, limit: int, as_json: bool, wait: float) -> None:
    """Pageviews, visitors, top lists and drops for one site (control characters in stored
    text are printed escaped)."""
    from shared.control.sites import site_for_domain
    from workers.stats_reader import read_site_stats
    from workers.store.store import StoreUnavailable

    if first and last and first > last:
        raise click.BadParameter("must not be before --from", param_hint="--to")
    settings = load_settings()
    # Each Redis command is bounded, and not retried: a Redis busy past the budget is named.
    client = redis_client(settings.redis_url, timeout_seconds=wait)
    try:
        site = site_for_domain(client, domain)
        if site is None:
            raise click.BadParameter(f"no site with domain {domain!r}", param_hint="--site")
        report = read_site_stats(settings.clickhouse_url, client, site.id, first, last, limit, wait)
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
    click.echo(f"{site.domain}  ({period})\nPageviews  {report['pageviews']}\nVisitors   {report['visitors']}\n")
    from rich.console import Console

    from hitstream.charts import series_chart

    Console(highlight=False).print(series_chart("Pageviews", over_time["unit"], over_time["points"]))
    click.echo(format_lists(report))
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


def _table(title: str, rows: list[tuple[str, int]]) -> list[str]:
    width = max([len(title), *(len(value) for value, _ in rows)])
    lines = [f"{title:<{width}}  Pageviews"]
    lines.extend(f"{value:<{width}}  {count:>9}" for value, count in rows)
    if not rows:
        lines.append("(none)")
    return lines
