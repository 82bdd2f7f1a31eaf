"""Store fixtures (``store_dsn``, ``store``) and row builders for the store and stats tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from workers.records import PAGEVIEW_COLUMNS, EventRow, PageviewRow
from workers.store import Store, open_store


@pytest.fixture
def store_dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'chdb'}"


@pytest.fixture
def store(store_dsn: str) -> Iterator[Store]:
    """A migrated store on this test's own chdb path; closed after the test, because a
    process can have one chdb path open at a time."""
    opened = open_store(store_dsn)
    opened.migrate()
    yield opened
    opened.close()


def pageview(site_id: str, timestamp: datetime, **fields: Any) -> PageviewRow:
    return PageviewRow(
        site_id=site_id,
        timestamp=timestamp,
        received_at=fields.pop("received_at", timestamp),
        page_id=fields.pop("page_id", str(uuid.uuid4())),
        session_id=fields.pop("session_id", str(uuid.uuid4())),
        **fields,
    )


def event(site_id: str, timestamp: datetime, name: str, properties: dict[str, str], **fields: Any) -> EventRow:
    row = pageview(site_id, timestamp, **fields)
    return EventRow(**{column: getattr(row, column) for column in PAGEVIEW_COLUMNS}, name=name, properties=properties)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def query(store: Store, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    """Read the store's tables directly (the Store API has no generic query on purpose)."""
    return store._client.query(sql, parameters=parameters).result_rows
