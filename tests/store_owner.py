"""This test process as the worker that owns an embedded store: its owner lock held, and its
stats answered on their own thread (workers.runtime.stats_answers), as ``hitstream worker``
does (tests/test_stats.py, tests/test_crawler_stats.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workers.runtime.context import WorkerContext
from workers.runtime.stats_answers import StatsAnswers
from workers.store.dsn import chdb_path, own_chdb_path


@contextmanager
def owned(store_dsn: str) -> Iterator[Path]:
    """This process holds the store's owner lock, as a ``hitstream worker`` does."""
    path = chdb_path(store_dsn)
    assert path is not None
    descriptor = own_chdb_path(path)
    try:
        yield path
    finally:
        os.close(descriptor)


@contextmanager
def answering(context: WorkerContext) -> Iterator[StatsAnswers]:
    """Stats answered from ``context``'s store on a thread of their own, until the block ends."""
    answers = StatsAnswers(context)
    answers.start()
    try:
        yield answers
    finally:
        answers.stop()
