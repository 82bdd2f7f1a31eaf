"""``hitstream replay``: the command line around the runner."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import click
import uvloop
from tqdm import tqdm

from hitstream.replay.combined import (
    DEFAULT_SKIP_EXTENSIONS,
    LogFilter,
    read_combined,
)
from hitstream.replay.csvfile import read_csv
from hitstream.replay.inputfile import count_lines, file_identity
from hitstream.replay.journal import Journal, SavedState, StateMismatch, load_state, save_state
from hitstream.replay.ndjson import read_ndjson
from hitstream.replay.records import ReadResult, ReplayInputError
from hitstream.replay.rejects import RejectsFile
from hitstream.replay.runner import Replayer
from hitstream.replay.sender import BATCH_MAX_ITEMS, LaneRefused, Sender
from hitstream.replay.sessions import Sessionizer
from hitstream.replay.tally import Tally


def _http_url(value: str, option: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("must be an absolute http or https URL", param_hint=option)
    return value.rstrip("/")


def _statuses(value: str) -> frozenset[int]:
    statuses: set[int] = set()
    try:
        for item in filter(None, (part.strip() for part in value.split(","))):
            low, _, high = item.partition("-")
            statuses.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise click.BadParameter("must be statuses or ranges, e.g. 200-299,304", param_hint="--statuses") from None
    return frozenset(statuses)


def _words(value: str) -> list[str]:
    return [word.strip().lstrip(".") for word in value.split(",") if word.strip()]


def _format_of(file: Path, chosen: str) -> str:
    if chosen != "auto":
        return chosen
    suffixes = [suffix.lower() for suffix in file.suffixes]
    return "csv" if ".csv" in suffixes else "ndjson"


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, help="Base URL of the hitstream API, e.g. http://127.0.0.1:8000.")
@click.option(
    "--token",
    required=True,
    envvar="HITSTREAM_TOKEN",
    help="A bulk API token, from tokens create --bulk (or HITSTREAM_TOKEN, which keeps it "
    "out of the process list); the replay uses the bulk lane.",
)
@click.option(
    "--format",
    "input_format",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "ndjson", "csv", "combined"]),
    help="auto: csv for *.csv(.gz), else ndjson.",
)
@click.option(
    "--endpoint",
    type=click.Choice(["single", "batch"]),
    default=None,
    help="Default: single for ndjson/csv, batch for combined logs.",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 1024), default=32, show_default=True, help="Requests in flight at once."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, BATCH_MAX_ITEMS),
    default=500,
    show_default=True,
    help="Pageviews per request on the batch endpoint.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Journal of finished lines. Default: FILE.state.json.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rejected lines as NDJSON. Default: FILE.rejects.ndjson.",
)
@click.option(
    "--resume/--restart", default=True, show_default=True, help="Skip the lines an earlier run finished, or start over."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--site-url", help="combined: scheme and host the log's paths belong to.")
@click.option("--methods", default="GET", show_default=True, help="combined: request methods to keep, comma-separated.")
@click.option(
    "--statuses", default="200-299", show_default=True, help="combined: response statuses to keep (redirects are 3xx)."
)
@click.option(
    "--skip-ext",
    default=",".join(sorted(DEFAULT_SKIP_EXTENSIONS)),
    help="combined: path extensions of assets to skip, comma-separated.",
)
@click.option(
    "--sessions", is_flag=True, help="combined: group lines into sessions by (site, IP, user agent), 30 min gap."
)
def replay(
    file: Path,
    url: str,
    token: str,
    input_format: str,
    endpoint: str | None,
    concurrency: int,
    batch_size: int,
    state_path: Path | None,
    rejects_path: Path | None,
    resume: bool,
    quiet: bool,
    site_url: str | None,
    methods: str,
    statuses: str,
    skip_ext: str,
    sessions: bool,
) -> None:
    """Replay FILE (NDJSON or CSV request bodies, or a combined access log, gzip too) through
    the ingest API, exactly once per line across interruptions."""
    url = _http_url(url, "--url")
    input_format = _format_of(file, input_format)
    options: dict[str, Any] = {"format": input_format}
    if input_format == "combined":
        if site_url is None:
            raise click.UsageError("--format combined needs --site-url")
        site_url = _http_url(site_url, "--site-url")
        log_filter = LogFilter(
            frozenset(m.upper() for m in _words(methods)),
            _statuses(statuses),
            frozenset(e.lower() for e in _words(skip_ext)),
        )
        options |= {
            "site_url": site_url,
            "methods": sorted(log_filter.methods),
            "statuses": sorted(log_filter.statuses),
            "skip_ext": sorted(log_filter.skip_extensions),
            "sessions": sessions,
        }
        session_ids = Sessionizer(urlsplit(site_url).hostname or "") if sessions else None
        results: Iterator[ReadResult] = read_combined(file, site_url, log_filter, session_ids)
    elif site_url is not None or sessions:
        raise click.UsageError("--site-url and --sessions apply to --format combined only")
    elif input_format == "csv":
        try:
            results = read_csv(file)
        except ReplayInputError as error:
            raise click.ClickException(str(error)) from None
    else:
        results = read_ndjson(file)
    use_batch = (endpoint or ("batch" if input_format == "combined" else "single")) == "batch"

    state_path = state_path or file.with_name(f"{file.name}.state.json")
    rejects_path = rejects_path or file.with_name(f"{file.name}.rejects.ndjson")
    identity = file_identity(file)
    try:
        saved = load_state(state_path) if resume else None
        if saved is not None:
            saved.check_matches(identity, options, state_path)
    except StateMismatch as error:
        raise click.ClickException(str(error)) from None
    journal = saved.journal() if saved else Journal()
    tally = Tally.from_dict(saved.tally) if saved else Tally()
    rejects = RejectsFile(rejects_path, journal.is_done if saved else None)

    def save() -> None:
        watermark, done = journal.snapshot()
        save_state(state_path, SavedState(identity, options, watermark, done, tally.to_dict()))

    total = count_lines(file) - (input_format == "csv")
    progress = tqdm(
        total=total, unit="line", dynamic_ncols=True, file=sys.stderr, disable=quiet or not sys.stderr.isatty()
    )
    started = time.monotonic()
    try:
        sent = uvloop.run(
            _replay(
                results,
                identity=identity,
                journal=journal,
                tally=tally,
                rejects=rejects,
                save=save,
                progress=progress,
                url=url,
                token=token,
                batch=use_batch,
                concurrency=concurrency,
                batch_size=batch_size if use_batch else 1,
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress.close()
        click.echo(
            f"interrupted; finished lines are recorded in {state_path}: run the same command again to resume", err=True
        )
        sys.exit(130)
    except LaneRefused as refused:
        progress.close()
        raise click.ClickException(
            f"the API refused the bulk lane: {refused}. A replay needs a bulk token "
            "(hitstream tokens create --bulk ...); nothing was recorded as rejected"
        ) from None
    finally:
        rejects.close()
    progress.close()
    click.echo(tally.summary(rejects_path, time.monotonic() - started, sent))


async def _replay(
    results: Iterator[ReadResult],
    *,
    url: str,
    token: str,
    batch: bool,
    concurrency: int,
    tally: Tally,
    **replayer_args: Any,
) -> int:
    """Run the replay in this event loop; SIGTERM cancels it like Ctrl-C (state is saved)."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sender = Sender(session, url, token, batch=batch, retries=tally.retries)
        replayer = Replayer(sender=sender, tally=tally, concurrency=concurrency, **replayer_args)
        try:
            await replayer.run(results)
        except ExceptionGroup as failed:  # the replay's tasks' failures, from its TaskGroup
            refused = failed.subgroup(LaneRefused)
            if refused is None:
                raise
            raise refused.exceptions[0] from None
    return replayer.sent
