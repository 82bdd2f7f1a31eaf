"""What ``hitstream geoip update`` and ``hitstream crawlers update`` share: each downloads a
file into a directory within a deadline, swaps it in, then says how processes find it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from shared.replaced_files import FILE_CHECK_SECONDS

F = TypeVar("F", bound=Callable[..., object])


def directory_option(default: str, written: str) -> Callable[[F], F]:
    """``--dir``: where the file named ``written`` goes."""
    return click.option(
        "--dir",
        "directory",
        default=default,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Where {written} is written (replaced atomically when it exists).",
    )


def deadline_option(default: float, download: str) -> Callable[[F], F]:
    """``--deadline``: how long ``download`` (each download, each list's) may take in all."""
    return click.option(
        "--deadline",
        "deadline_seconds",
        default=default,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        help=f"How long {download} may take in all (however slowly the server sends).",
    )


def say_how_processes_find(installed: Path, configured: Path | None, variable: str, readers: str, verb: str) -> None:
    """Running ``readers`` ``verb`` the file by themselves when ``variable`` (``configured``)
    names it already; otherwise, the setting that points them at it."""
    if configured is not None and configured.resolve() == installed:
        click.echo(f"running {readers} {verb} it within {FILE_CHECK_SECONDS:.0f} s")
    else:
        click.echo(f"{readers} use it with {variable}={installed}")
