"""``hitstream worker``, ``hitstream dead-letters`` and ``hitstream queue`` (``--watch``: redrawn live).

``hitstream worker`` imports the worker inside the command: the store and the pipeline load
clickhouse-connect, Arrow and the parsers, which the other sub-commands do without.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime

import click
import orjson
import redis

from shared.config import Settings, load_settings
from shared.queue_caps import check_caps
from shared.redis_client import redis_client, unanswered
from shared.redis_safety import RedisSafety, check_redis, inspect_redis
from workers.batch import dead_letters as dead_letter_store
from workers.queue_stats import QueueStats, collect_queue_stats
from workers.runtime.roles import Role


@click.command()
@click.option(
    "-n",
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes that claim and enrich batches on this host (with an embedded chdb:// store, one"
    " more process owns the store and writes for them all).",
)
def worker(processes: int) -> None:
    """Run RQ workers that move pageviews from the Redis stream into ClickHouse (their summed
    metrics on HITSTREAM_WORKER_METRICS_PORT when set)."""
    from workers.host import metrics_endpoint

    # A stop that came since the process started is still held (hitstream.launch) and waits
    # for its watch (a warm shutdown, or run_processes's forwarding): acted on at once,
    # SIGTERM's default action left the metrics directory behind, and SIGINT's
    # KeyboardInterrupt could be lost (shared.stop_signals).
    settings = load_settings()
    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    # First: the worker processes' metrics go to the endpoint's directory only if it is set
    # before anything imports prometheus_client (workers.host.metrics_endpoint).
    endpoint = None
    if port is not None:
        try:
            endpoint = metrics_endpoint.start(port, host)
        except OSError as error:
            raise click.ClickException(
                f"cannot serve worker metrics on {metrics_endpoint.listen_address(host, port)} "
                f"(HITSTREAM_WORKER_METRICS_HOST, HITSTREAM_WORKER_METRICS_PORT): {error}"
            ) from None
    try:
        _run_workers(processes)
    finally:
        if endpoint is not None:
            endpoint.stop()


def _run_workers(processes: int) -> None:
    from workers.store.dsn import StoreOwned, chdb_path, own_chdb_path

    settings = load_settings()
    client = _redis()
    safety = _check(client, settings)
    client.close()
    # The workers do not use the caps; the warning is for an operator reading any process's log.
    check_caps(settings, safety.maxmemory)
    store_path = chdb_path(settings.clickhouse_url)
    if store_path is None:
        _run(processes, [Role.WORKER] * processes)
        return
    # Before Redis or the store is touched: a second worker would claim batches it can never
    # write (they would wait for its lease to expire), so it must not start at all.
    try:
        owner_lock = own_chdb_path(store_path)
    except StoreOwned as error:
        raise click.ClickException(str(error)) from None
    try:
        # Only one process can open the store: N enrichers hand their batches to one writer.
        _run(processes, [Role.WRITER] + [Role.ENRICHER] * processes)
    finally:
        os.close(owner_lock)


@click.group("dead-letters")
def dead_letters() -> None:
    """Inspect, requeue or purge envelopes that broke a pipeline step or that the store refused."""


def _redis() -> redis.Redis:
    """A client for one CLI command (the per-process worker singletons are for workers)."""
    return redis_client(load_settings().redis_url)


def _checked_redis() -> redis.Redis:
    """``_redis()`` after the start-up check: refuses an evicting Redis (shared.redis_safety)."""
    client = _redis()
    _check(client, load_settings())
    return client


def _check(client: redis.Redis, settings: Settings) -> RedisSafety:
    """The start-up check (shared.redis_safety), a Redis that does not answer named in one line."""
    try:
        return check_redis(client, settings)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise click.ClickException(unanswered(settings.redis_url, error)) from None


def _ids(ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if all_ == bool(ids):
        raise click.UsageError("give dead letter IDs or --all (not both)")
    return None if all_ else list(ids)


@dead_letters.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, envelope included.")
def list_command(as_json: bool) -> None:
    """Dead letters, oldest first."""
    letters = dead_letter_store.list_dead_letters(_checked_redis())
    for letter in letters:
        if as_json:
            click.echo(letter.to_json())
        else:
            click.echo(f"{letter.id}\t{letter.failed_at}\t{letter.step}\t{letter.site_id or '-'}\t{letter.error}")
    if not as_json:
        click.echo(f"{len(letters)} dead letter(s)", err=True)


@dead_letters.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
def requeue(ids: tuple[str, ...], all_: bool) -> None:
    """Put dead letters back on the stream of their lane (without their visitor IP)."""
    requeued = dead_letter_store.requeue(_checked_redis(), _ids(ids, all_))
    click.echo(f"requeued {len(requeued)} dead letter(s)")


@dead_letters.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
def purge(ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters."""
    deleted = dead_letter_store.purge(_checked_redis(), _ids(ids, all_))
    click.echo(f"purged {deleted} dead letter(s)")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _rate(per_second: float | None) -> str:
    return "-" if per_second is None else f"{per_second:.1f}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--rate-interval",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Measure the lanes' rates over this long (0: no rates).",
)
@click.option("--watch", is_flag=True, help="Redraw the figures after every rate interval until Ctrl-C.")
def queue(as_json: bool, rate_interval: float, watch: bool) -> None:
    """Per lane: depth, waiting, oldest waiting pageview, rates, claimed batches; the batches
    handed to the store writer; then workers, failures, and what Redis's settings put at risk."""
    if watch and as_json:
        raise click.UsageError("--watch draws the figures for a person; for a program, run --json repeatedly")
    if watch and rate_interval == 0:
        raise click.UsageError("--watch redraws after every --rate-interval, which must be above 0")
    client = _redis()
    if watch:
        _watch(client, rate_interval)
        return
    stats = collect_queue_stats(client, rate_interval)
    safety = inspect_redis(client)
    if as_json:
        figures = {
            **dataclasses.asdict(stats),
            "redis": {**dataclasses.asdict(safety), "refusal": safety.refusal(), "warnings": safety.warnings()},
        }
        click.echo(orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        return
    click.echo(_queue_text(stats, safety))


def _watch(client: redis.Redis, interval: float) -> None:
    """``hitstream queue`` redrawn in place on a terminal (rich's Live); elsewhere (a pipe, a
    file) each sample is printed below the last, as plain text."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def sample() -> str:
        stats = collect_queue_stats(client, interval)  # takes ``interval``: the rates' sampling
        taken = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"hitstream queue at {taken}, rates over {interval:g} s (Ctrl-C stops)\n" + _queue_text(
            stats, inspect_redis(client)
        )

    console = Console(highlight=False)
    try:
        if console.is_terminal:
            with Live(Text("measuring ..."), console=console, auto_refresh=False) as live:
                while True:
                    live.update(Text(sample()), refresh=True)
        else:
            while True:
                click.echo(sample() + "\n")
    except KeyboardInterrupt:
        pass


def _queue_text(stats: QueueStats, safety: RedisSafety) -> str:
    lines = []
    for lane, figures in stats.lanes.items():
        backlog = figures.backlog
        lines.append(f"{lane} lane")
        lines.append(f"  depth              {backlog.depth}")
        lines.append(f"  waiting            {backlog.waiting}")
        lines.append(f"  oldest waiting     {_age(backlog.oldest_waiting_age_seconds)}")
        lines.append(f"  added/s            {_rate(figures.added_per_second)}")
        lines.append(f"  acknowledged/s     {_rate(figures.acknowledged_per_second)}")
        lines.append(f"  claimed batches    {len(figures.claimed_batches)}")
        for batch in figures.claimed_batches:
            state = "with the writer" if batch.with_writer else "lease expired" if batch.lease_expired else "leased"
            lines.append(f"    {batch.id}  {batch.entries} entries  {_age(batch.age_seconds)}  {state}")
    lines.append("waiting for the store writer (enriched)")
    lines.append(f"  batches            {stats.enriched.batches}")
    lines.append(f"  pageviews          {stats.enriched.pageviews}")
    lines.append(f"  oldest batch       {_age(stats.enriched.oldest_age_seconds)}")
    lines.append(f"live workers         {stats.live_workers}")
    lines.append(f"failed jobs          {stats.failed_jobs}")
    lines.append(f"dead letters         {stats.dead_letters}")
    lines.append(f"redis eviction       {safety.maxmemory_policy or 'unknown'}")
    lines.append(f"redis AOF            {_on_off(safety.aof_enabled)}")
    lines.extend(f"WARNING: {problem}" for problem in filter(None, [safety.refusal(), *safety.warnings()]))
    return "\n".join(lines)


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "OFF")


def _run(processes: int, roles: list[Role]) -> None:
    """One worker process here, or a supervisor of one child per role (``roles``): the
    supervisor loads none of what a worker process runs (workers.runtime.supervisor)."""
    if processes == 1:
        from workers.runtime.processes import run_worker_process

        run_worker_process()
    else:
        from workers.runtime.supervisor import run_processes

        run_processes(roles)
