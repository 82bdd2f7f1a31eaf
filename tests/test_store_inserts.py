"""write_batch: every field round-trips (pageviews and events), drops are counted per minute,
a retried batch is stored once (also across partitions, in every table, and after a crash
between the inserts), a batch over any number of months is stored, rows the store refuses are
isolated and returned with its error while the rest is stored once (also after a crash half
way through a split), and a store that cannot be reached or fails for another reason raises
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

from tests.procs import Commands
from tests.stores import event, pageview, query, utc
from workers.records import EVENT_COLUMNS, PAGEVIEW_COLUMNS, Drop, DropReason
from workers.store.store import Store, open_store
from workers.store.unavailable import StoreUnavailable


def site() -> str:
    return str(uuid.uuid4())


def count_rows(store: Store, table: str = "pageviews") -> int:
    return query(store, f"SELECT count() FROM {table}")[0][0]


def as_written(columns: Sequence[str], stored: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Stored rows in the types they were written in: times in UTC, UUIDs as text."""
    return [
        tuple(
            value.replace(tzinfo=utc(2000, 1, 1).tzinfo)
            if name in ("timestamp", "received_at")
            else str(value)
            if isinstance(value, uuid.UUID)
            else value
            for name, value in zip(columns, stored_row, strict=True)
        )
        for stored_row in stored
    ]


def test_every_field_round_trips(store: Store) -> None:
    row = pageview(
        site(),
        utc(2024, 3, 9, 14, 5, 6, 789000),
        received_at=utc(2024, 3, 9, 14, 5, 7, 1000),
        hostname="shop.example.com",
        path="/p/ä",
        query="a=1&b=2",
        referrer="https://news.example.org/x?y",
        referrer_host="news.example.org",
        utm_source="newsletter",
        utm_medium="email",
        utm_campaign="spring",
        utm_term="shoes",
        utm_content="hero",
        qr_id=str(uuid.uuid4()),
        country="DE",
        region_code="BY",
        region_name="Bavaria",
        city="Munich",
        asn=3320,
        provider="Deutsche Telekom AG",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
        browser="Firefox",
        browser_version="125",
        os="Linux",
        os_version="",
        device_type="desktop",
        is_bot=True,
        language="de-DE",
        screen_width=2560,
        screen_height=1440,
        viewport_width=1280,
        viewport_height=720,
    )
    bare = pageview(site(), utc(2024, 3, 9, 14, 5, 6))
    store.write_batch("b:round-trip", [row, bare], [])

    stored = query(store, f"SELECT {', '.join(PAGEVIEW_COLUMNS)} FROM pageviews ORDER BY path = '/' ")
    expected = [astuple(row), astuple(bare)]
    normalised = as_written(PAGEVIEW_COLUMNS, stored)
    assert normalised == expected
    assert bare.utm_source is None and normalised[1][PAGEVIEW_COLUMNS.index("qr_id")] is None


def test_events_round_trip_with_their_properties_into_the_events_table(store: Store) -> None:
    signup = event(
        site(),
        utc(2024, 3, 9, 14, 5, 6, 789000),
        "signup",
        {"plan": "pro", "seats": "5", "note": 'ä "quoted"'},
        path="/join",
        country="DE",
        utm_source="newsletter",
        qr_id=str(uuid.uuid4()),
        is_bot=False,
        screen_width=1280,
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
    mixed = [row for pair in zip(views, events, strict=False) for row in pair] + views[200:]  # the rest: views alone
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
    assert query(store, "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events'") == [
        (0,)
    ]


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
        "SELECT toString(site_id), reason, toString(minute), sum(count) FROM drop_counts GROUP BY ALL ORDER BY ALL",
    )
    assert sorted(rows) == sorted(
        [
            (first, "spam_referrer", "2024-05-01 10:00:00", 2),
            (first, "spam_referrer", "2024-05-01 10:01:00", 1),
            (first, "site_path", "2024-05-01 10:00:00", 1),
            (second, "spam_referrer", "2024-05-01 10:00:00", 1),
        ]
    )
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
        (202401, 5_000),
        (202402, 5_000),
    ]


def test_retried_drop_counts_are_stored_once(store: Store) -> None:
    site_id = site()
    drops = [Drop(site_id, DropReason.INSTANCE_CIDR, utc(2024, 1 + i % 2, 10, 8, i % 60)) for i in range(50)]
    store.write_batch("b:drops-retry", [], drops)
    store.write_batch("b:drops-retry", [], drops)
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(50,)]


def test_crash_between_the_two_inserts_then_retry_stores_everything_once(store: Store) -> None:
    site_id = site()
    rows = [pageview(site_id, utc(2024, 7, 1, 0, 0, i)) for i in range(10)]
    drops = [Drop(site_id, DropReason.SPAM_REFERRER, utc(2024, 7, 1, 0, 0, 0))] * 3
    store.write_batch("b:crash", rows, [])  # the first attempt died before the drop insert
    store.write_batch("b:crash", rows, drops)
    store.write_batch("b:crash", rows, drops)
    assert count_rows(store) == 10
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(3,)]


def test_naive_times_are_refused_naming_the_field(store: Store) -> None:
    row = replace(pageview(site(), utc(2024, 1, 1)), timestamp=utc(2024, 1, 1).replace(tzinfo=None))
    with pytest.raises(ValueError, match="PageviewRow.timestamp"):
        store.write_batch("b:naive", [row], [])
    drop = Drop(site(), DropReason.SPAM_REFERRER, utc(2024, 1, 1).replace(tzinfo=None))
    with pytest.raises(ValueError, match="Drop.timestamp"):
        store.write_batch("b:naive", [], [drop])
    assert count_rows(store) == 0


def test_unreachable_server_raises_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    connect_timeout = 30  # far beyond any delay of a loaded machine: waiting for it would show
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        open_store(f"http://default:secret@127.0.0.1:{port}?connect_timeout={connect_timeout}")
    assert time.monotonic() - started < connect_timeout  # refused at once, not timed out


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


def test_chdb_path_open_in_another_process_raises_store_unavailable(commands: Commands, tmp_path: Path) -> None:
    path = tmp_path / "owned"
    owner = commands.start(
        [
            sys.executable,
            "-c",
            "import sys, clickhouse_connect; client = clickhouse_connect.get_client(dsn=f'chdb://{sys.argv[1]}');"
            " print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "open"
        with pytest.raises(StoreUnavailable, match="open in another process"):
            open_store(f"chdb://{path}")
    finally:
        owner.communicate("")


def months_from(first_year: int, count: int) -> list[Any]:
    """The first instant of ``count`` consecutive months from January of ``first_year``."""
    return [utc(first_year + n // 12, 1 + n % 12, 1, 12) for n in range(count)]


@pytest.mark.parametrize(("months", "per_month"), [(110, 1), (101, 7)])
def test_a_batch_spanning_more_months_than_one_insert_may_hold_is_stored_whole_and_once(
    store: Store, months: int, per_month: int
) -> None:
    # ClickHouse refuses one INSERT block spanning more than 100 partitions (months here).
    site_id = site()
    times = months_from(2005, months)
    views = [pageview(site_id, moment, path=f"/{n}") for moment in times for n in range(per_month)]
    events = [event(site_id, moment, "replayed", {}) for moment in times[::3]]
    drops = [Drop(site_id, DropReason.SPAM_REFERRER, moment) for moment in times[::2]]
    for _ in range(2):  # the second write is a retry of the same batch
        assert not store.write_batch("b:history", [*views, *events], drops)
    assert (count_rows(store), count_rows(store, "events")) == (months * per_month, len(events))
    assert query(store, "SELECT uniqExact(toYYYYMM(timestamp)) FROM pageviews") == [(months,)]
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(len(drops),)]


def test_a_batch_an_older_writer_stored_as_one_block_is_deduplicated_when_written_by_month(store: Store) -> None:
    # Before inserts were split by month, a batch was one block under the plain batch id. A
    # re-claim after an upgrade must still find it: ClickHouse keys the token per partition.
    from workers.store.arrow import arrow_table
    from workers.store.schema import PAGEVIEWS
    from workers.store.store import _INSERT_SETTINGS

    rows = [pageview(site(), moment) for moment in months_from(2024, 3) * 5]
    block = arrow_table(PAGEVIEWS, [astuple(row) for row in rows])
    store._client.insert_arrow("pageviews", block, settings={**_INSERT_SETTINGS, "insert_deduplication_token": "b:old"})
    assert not store.write_batch("b:old", rows, [])
    assert count_rows(store) == 15


REFUSED_VALUES = {
    # value the row gets -> what the store's error says
    "site_id not a UUID": ({"site_id": "not-a-uuid"}, "Code: 376"),
    "screen_width of 2**40": ({"screen_width": 2**40}, "ArrowInvalid"),
    "language a number": ({"language": 5}, "ArrowTypeError"),
    "path the operator's constraint forbids": ({"path": "/forbidden"}, "Code: 469"),
}


# Where the refused rows lie, and the way each is refused there: each way and each place is
# tried, the server's refusals (Code: ...) scattered and in a run, Arrow's scattered and first.
# The isolation that finds them is one whatever refused the rows; every way at every place
# took 12 tests of ~2.5 s for it.
BAD_POSITIONS = {"scattered": [17, 600, 999], "first": [0], "a run of 40": list(range(100, 140))}
REFUSALS = [
    ("site_id not a UUID", "scattered"),
    ("screen_width of 2**40", "first"),
    ("path the operator's constraint forbids", "a run of 40"),
    ("language a number", "scattered"),
]


@pytest.mark.parametrize(("refused", "place"), REFUSALS, ids=[f"{refused}, {place}" for refused, place in REFUSALS])
def test_refused_rows_are_isolated_with_the_stores_error_and_the_rest_stored_once(
    store: Store, refused: str, place: str
) -> None:
    bad_positions = BAD_POSITIONS[place]
    store._client.command("ALTER TABLE pageviews ADD CONSTRAINT no_forbidden CHECK path != '/forbidden'")
    fields, error_mark = REFUSED_VALUES[refused]
    site_id = site()
    rows = [pageview(site_id, moment) for moment in months_from(2024, 3) * 334][:1000]
    for position in bad_positions:
        rows[position] = replace(rows[position], **fields)
    for _ in range(2):  # the second write is a retry of the same batch
        refusals = store.write_batch("b:poison", rows, [])
        assert sorted(refusals.rows) == bad_positions and not refusals.drops
        assert all(error_mark in error for error in refusals.rows.values())
    assert count_rows(store) == 1000 - len(bad_positions)
    stored = {str(page) for (page,) in query(store, "SELECT page_id FROM pageviews")}
    assert stored == {row.page_id for n, row in enumerate(rows) if n not in bad_positions}


def test_refused_drop_counts_name_every_drop_counted_in_them(store: Store) -> None:
    good, bad = site(), "not-a-uuid"
    drops = [Drop(good, DropReason.SITE_PATH, utc(2024, 1, 1, 10))] * 3 + [
        Drop(bad, DropReason.SITE_PATH, utc(2024, 1, 1, 10))
    ] * 2
    refusals = store.write_batch(
        "b:drops", [pageview(good, utc(2024, 1, 1))], [drops[0], drops[3], *drops[1:3], drops[4]]
    )
    assert sorted(refusals.drops) == [1, 4] and not refusals.rows
    assert all("Code: 376" in error for error in refusals.drops.values())
    assert query(store, "SELECT sum(count) FROM drop_counts") == [(3,)] and count_rows(store) == 1


@pytest.mark.parametrize("inserts_before_the_crash", [1, 4, 9, 15])
def test_a_writer_that_died_half_way_through_a_split_stores_no_row_twice_when_retried(
    store: Store, monkeypatch: pytest.MonkeyPatch, inserts_before_the_crash: int
) -> None:
    store._client.command("ALTER TABLE pageviews ADD CONSTRAINT no_forbidden CHECK path != '/forbidden'")
    rows = [pageview(site(), moment, path="/") for moment in months_from(2023, 2) * 200]
    for position in (3, 250, 399):
        rows[position] = replace(rows[position], path="/forbidden")
    insert = store._client.insert_arrow
    calls = 0

    def dying_insert(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > inserts_before_the_crash:
            raise OSError("the worker died here")
        return insert(*args, **kwargs)

    monkeypatch.setattr(store._client, "insert_arrow", dying_insert)
    with pytest.raises(StoreUnavailable, match="the worker died here"):
        store.write_batch("b:crash-in-split", rows, [])
    monkeypatch.setattr(store._client, "insert_arrow", insert)
    assert sorted(store.write_batch("b:crash-in-split", rows, []).rows) == [3, 250, 399]
    assert count_rows(store) == 397
    assert query(store, "SELECT count() = uniqExact(page_id) FROM pageviews") == [(1,)]


def test_too_many_parts_in_one_month_is_an_outage_not_a_refusal(store: Store) -> None:
    # With one block per month, TOO_MANY_PARTS (252) can only mean merges lag behind
    # inserts: the batch is retried later, never split or dead-lettered.
    store._client.command("SYSTEM STOP MERGES pageviews")
    store._client.command("ALTER TABLE pageviews MODIFY SETTING parts_to_throw_insert = 2")
    for n in range(2):
        store.write_batch(f"b:part-{n}", [pageview(site(), utc(2024, 5, 1))], [])
    with pytest.raises(StoreUnavailable, match="Code: 252"):
        store.write_batch("b:one-part-too-many", [pageview(site(), utc(2024, 5, 1))], [])
    assert count_rows(store) == 2
