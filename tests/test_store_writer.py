"""write_batch: every field round-trips (pageviews and events), drops are counted per minute,
a retried batch is stored once (also across partitions, in every table, and after a crash
between the inserts), and a store that cannot be reached or rejects the insert raises
StoreUnavailable."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

import pytest

from tests.stores import event, pageview, query, utc
from workers.records import EVENT_COLUMNS, PAGEVIEW_COLUMNS, Drop, DropReason
from workers.store import Store, StoreUnavailable, open_store


def site() -> str:
    return str(uuid.uuid4())


def count_rows(store: Store, table: str = "pageviews") -> int:
    return query(store, f"SELECT count() FROM {table}")[0][0]


def as_written(columns: Sequence[str], stored: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Stored rows in the types they were written in: times in UTC, UUIDs as text."""
    return [
        tuple(
            value.replace(tzinfo=utc(2000, 1, 1).tzinfo) if name in ("timestamp", "received_at")
            else str(value) if isinstance(value, uuid.UUID) else value
            for name, value in zip(columns, stored_row)
        )
        for stored_row in stored
    ]


def test_every_field_round_trips(store: Store) -> None:
    row = pageview(
        site(), utc(2024, 3, 9, 14, 5, 6, 789000), received_at=utc(2024, 3, 9, 14, 5, 7, 1000),
        hostname="shop.example.com", path="/p/ä", query="a=1&b=2", referrer="https://news.example.org/x?y",
        referrer_host="news.example.org", utm_source="newsletter", utm_medium="email", utm_campaign="spring",
        utm_term="shoes", utm_content="hero", qr_id=str(uuid.uuid4()), country="DE", region_code="BY",
        region_name="Bavaria", city="Munich", asn=3320, provider="Deutsche Telekom AG",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0", browser="Firefox", browser_version="125",
        os="Linux", os_version="", device_type="desktop", is_bot=True, language="de-DE",
        screen_width=2560, screen_height=1440, viewport_width=1280, viewport_height=720,
    )
    bare = pageview(site(), utc(2024, 3, 9, 14, 5, 6))
    store.write_batch("b:round-trip", [row, bare], [])

    stored = query(
        store,
        f"SELECT {', '.join(PAGEVIEW_COLUMNS)} FROM pageviews ORDER BY path = '/' "
    )
    expected = [astuple(row), astuple(bare)]
    normalised = as_written(PAGEVIEW_COLUMNS, stored)
    assert normalised == expected
    assert bare.utm_source is None and normalised[1][PAGEVIEW_COLUMNS.index("qr_id")] is None


def test_events_round_trip_with_their_properties_into_the_events_table(store: Store) -> None:
    signup = event(
        site(), utc(2024, 3, 9, 14, 5, 6, 789000), "signup", {"plan": "pro", "seats": "5", "note": "ä \"quoted\""},
        path="/join", country="DE", utm_source="newsletter", qr_id=str(uuid.uuid4()), is_bot=False, screen_width=1280,
    )
    bare = event(site(), utc(2024, 3, 9, 14, 5, 7), "click", {})
    view = pageview(signup.site_id, utc(2024, 3, 9, 14, 5, 5), path="/pricing")
    store.write_batch("b:events", [view, signup, bare], [])

    stored = query(store, f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY name = 'click'")
    assert as_written(EVENT_COLUMNS, stored) == [astuple(signup), astuple(bare)]
    # Events are not pageviews: the pageview went to its own table, alone.
    assert query(store, "SELECT path FROM pageviews") == [("/pricing",)]


def test_retried_mixed_batch_is_stored_once_in_both_tables(store: Store) -> None:
    site_id = site()
    # Two months, so each table gets two partitions from one insert.
    views = [pageview(site_id, utc(2024, 1 + i % 2, 28, 12, 0, i % 60)) for i in range(300)]
    events = [event(site_id, utc(2024, 1 + i % 2, 28, 12, 0, i % 60), "signup", {"n": str(i)}) for i in range(200)]
    mixed = [row for pair in zip(views, events) for row in pair] + views[200:]
    drops = [Drop(site_id, DropReason.SPAM_REFERRER, utc(2024, 1, 28, 12))] * 4
    store.write_batch("b:mixed", mixed, drops)
    store.write_batch("b:mixed", mixed, drops)
    store.write_batch("b:mixed", events, [])  # a retry that only got as far as the events
    assert (count_rows(store), count_rows(store, "events")) == (300, 200)
    assert query(store, "SELECT uniqExact(properties['n']) FROM events") == [(200,)]
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(4,)]


def test_a_batch_without_events_does_not_insert_into_the_events_table(store: Store) -> None:
    store.write_batch("b:pageviews-only", [pageview(site(), utc(2024, 5, 1))], [])
    assert count_rows(store) == 1
    assert query(store, "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events'") == [(0,)]


def test_drops_are_counted_per_site_reason_and_minute(store: Store) -> None:
    first, second = site(), site()
    drops = [
        Drop(first, DropReason.SPAM_REFERRER, utc(2024, 5, 1, 10, 0, 1)),
        Drop(first, DropReason.SPAM_REFERRER, utc(2024, 5, 1, 10, 0, 59)),
        Drop(first, DropReason.SPAM_REFERRER, utc(2024, 5, 1, 10, 1, 0)),
        Drop(first, DropReason.SITE_PATH, utc(2024, 5, 1, 10, 0, 30)),
        Drop(second, DropReason.SPAM_REFERRER, utc(2024, 5, 1, 10, 0, 2)),
    ]
    store.write_batch("b:drops", [], drops)
    rows = query(
        store,
        "SELECT toString(site_id), reason, toString(minute), sum(count) FROM drop_counts"
        " GROUP BY ALL ORDER BY ALL",
    )
    assert sorted(rows) == sorted([
        (first, "spam_referrer", "2024-05-01 10:00:00", 2),
        (first, "spam_referrer", "2024-05-01 10:01:00", 1),
        (first, "site_path", "2024-05-01 10:00:00", 1),
        (second, "spam_referrer", "2024-05-01 10:00:00", 1),
    ])
    # One row per (site, reason, minute) went in, not one per drop.
    assert count_rows(store, "drop_counts") == 4


def test_retried_batch_is_stored_once_even_with_a_different_row_list(store: Store) -> None:
    site_id = site()
    rows = [pageview(site_id, utc(2024, 6, 1, 12, 0, i)) for i in range(20)]
    store.write_batch("b:retry", rows, [])
    store.write_batch("b:retry", rows, [])
    store.write_batch("b:retry", rows[:5], [])
    assert count_rows(store) == 20


def test_batches_with_equal_rows_but_different_ids_are_both_stored(store: Store) -> None:
    rows = [pageview(site(), utc(2024, 6, 1, 12, 0, 0), page_id=str(uuid.uuid4()))]
    store.write_batch("b:one", rows, [])
    store.write_batch("b:two", rows, [])
    assert count_rows(store) == 2


def test_retried_batch_spanning_two_months_is_stored_once(store: Store) -> None:
    site_id = site()
    # 10,000 rows, half in January and half in February: two partitions, one insert.
    rows = [pageview(site_id, utc(2024, 1 + i % 2, 28, 23, 59, i % 60)) for i in range(10_000)]
    store.write_batch("b:two-months", rows, [])
    partitions = query(store, "SELECT DISTINCT partition FROM system.parts WHERE table = 'pageviews' AND active")
    assert sorted(partitions) == [("202401",), ("202402",)]
    store.write_batch("b:two-months", rows, [])
    assert query(store, "SELECT toYYYYMM(timestamp), count() FROM pageviews GROUP BY 1 ORDER BY 1") == [
        (202401, 5_000), (202402, 5_000)]


def test_retried_drop_counts_are_stored_once(store: Store) -> None:
    site_id = site()
    drops = [Drop(site_id, DropReason.INSTANCE_CIDR, utc(2024, 1 + i % 2, 10, 8, i % 60)) for i in range(50)]
    store.write_batch("b:drops-retry", [], drops)
    store.write_batch("b:drops-retry", [], drops)
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(50,)]


def test_crash_between_the_two_inserts_then_retry_stores_everything_once(store: Store) -> None:
    site_id = site()
    rows = [pageview(site_id, utc(2024, 7, 1, 0, 0, i)) for i in range(10)]
    drops = [Drop(site_id, DropReason.DNT, utc(2024, 7, 1, 0, 0, 0))] * 3
    store.write_batch("b:crash", rows, [])  # the first attempt died before the drop insert
    store.write_batch("b:crash", rows, drops)
    store.write_batch("b:crash", rows, drops)
    assert count_rows(store) == 10
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(3,)]


def test_naive_times_are_refused_naming_the_field(store: Store) -> None:
    row = replace(pageview(site(), utc(2024, 1, 1)), timestamp=utc(2024, 1, 1).replace(tzinfo=None))
    with pytest.raises(ValueError, match="PageviewRow.timestamp"):
        store.write_batch("b:naive", [row], [])
    drop = Drop(site(), DropReason.DNT, utc(2024, 1, 1).replace(tzinfo=None))
    with pytest.raises(ValueError, match="Drop.timestamp"):
        store.write_batch("b:naive", [], [drop])
    assert count_rows(store) == 0


def test_unreachable_server_raises_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        open_store(f"http://default:secret@127.0.0.1:{port}")
    assert time.monotonic() - started < 5


def test_password_never_appears_in_the_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable) as raised:
        open_store(f"http://default:hunter2@127.0.0.1:{port}")
    assert "hunter2" not in str(raised.value)


def test_rejected_insert_raises_store_unavailable(store_dsn: str) -> None:
    unmigrated = open_store(store_dsn)
    try:
        with pytest.raises(StoreUnavailable, match="batch b:rejected was not stored"):
            unmigrated.write_batch("b:rejected", [pageview(site(), utc(2024, 1, 1))], [])
    finally:
        unmigrated.close()


def test_chdb_path_open_in_another_process_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "owned"
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, clickhouse_connect; client = clickhouse_connect.get_client(dsn=f'chdb://{sys.argv[1]}');"
         " print('open', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "open"
        with pytest.raises(StoreUnavailable, match="open in another process"):
            open_store(f"chdb://{path}")
    finally:
        owner.communicate("")
