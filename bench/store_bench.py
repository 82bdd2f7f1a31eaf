"""Store write throughput: write_batch in 1000-row batches into a fresh chdb path, against the
previous writer (clickhouse-connect's row-oriented ``insert``, converting values in Python),
its column-oriented variant, and one insert per pageview, all measured in the same run.

The machine may be shared, so the writers take turns batch by batch, and each figure is the
median over its batches, both per wall-clock second and per CPU second of this process (the
embedded engine's threads included), which other processes' load disturbs far less.

    .venv/bin/python bench/store_bench.py [--rows 60000] [--batch 1000] [--naive-rows 200]
    .venv/bin/python bench/store_bench.py --fsync [--rows 60000] [--batch 1000]

``--fsync`` measures instead what durable inserts cost write_batch, batch by batch in turns
on one store (1000 pageviews and 10 drops a batch: two tables, two parts): the tables' fsync
settings and the deduplication logs fsynced by the writer (as shipped: "on"), the settings
alone ("settings"), and neither ("off": the settings set back to 0 before the batch).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from workers.records import PAGEVIEW_COLUMNS, Drop, DropReason, EventRow, PageviewRow
from workers.store.schema import DROP_COUNTS, PAGEVIEWS
from workers.store.store import Store, open_store

PATHS = [f"/blog/post-{i}" for i in range(200)] + ["/", "/pricing", "/docs"]
AGENTS = [f"Mozilla/5.0 (X11; Linux x86_64) Firefox/{v}.0" for v in range(100, 130)]
SETTINGS = {"async_insert": 0, "insert_deduplicate": 1}

Writer = Callable[[Store, str, list[PageviewRow]], None]


def rows(count: int, site_id: str, row_type: type[PageviewRow] = PageviewRow, **extra: object) -> list[PageviewRow]:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    return [
        row_type(
            site_id=site_id,
            timestamp=start + timedelta(seconds=i),
            received_at=start + timedelta(seconds=i),
            page_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            hostname="example.com",
            path=random.choice(PATHS),
            query="a=1",
            referrer="https://news.example.org/x",
            referrer_host="news.example.org",
            utm_source=random.choice([None, "newsletter"]),
            country="DE",
            city="Berlin",
            asn=3320,
            provider="Telekom",
            user_agent=random.choice(AGENTS),
            browser="Firefox",
            browser_version="125",
            os="Linux",
            device_type="desktop",
            language="de",
            screen_width=1920,
            **extra,
        )
        for i in range(count)
    ]


def write_batch(store: Store, batch_id: str, batch: list[PageviewRow]) -> None:
    store.write_batch(batch_id, batch, [])


_values = attrgetter(*PAGEVIEW_COLUMNS)


def previous_row_insert(store: Store, batch_id: str, batch: list[PageviewRow]) -> None:
    """The writer before Arrow: clickhouse-connect converts each row's values in Python."""
    store._client.insert(
        PAGEVIEWS.name,
        [_values(row) for row in batch],
        column_names=PAGEVIEWS.column_names,
        column_type_names=PAGEVIEWS.column_types,
        settings={**SETTINGS, "insert_deduplication_token": batch_id},
    )


def column_insert(store: Store, batch_id: str, batch: list[PageviewRow]) -> None:
    """The same conversion, handed over column by column (no transposition inside the driver)."""
    store._client.insert(
        PAGEVIEWS.name,
        [list(column) for column in zip(*map(_values, batch), strict=True)],
        column_names=PAGEVIEWS.column_names,
        column_type_names=PAGEVIEWS.column_types,
        column_oriented=True,
        settings={**SETTINGS, "insert_deduplication_token": batch_id},
    )


def rates(
    store: Store, writers: dict[str, Writer], batches: list[list[PageviewRow]]
) -> dict[str, list[tuple[float, float]]]:
    """(rows per wall second, rows per CPU second) of every batch, the writers taking turns so
    load changes hit them alike."""
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in writers}
    for index, batch in enumerate(batches):
        for name, writer in writers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            writer(store, f"{name}:{index}", batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            measured[name].append((len(batch) / wall, len(batch) / max(cpu, 1e-6)))
    return measured


FSYNC_VARIANTS = ("off", "settings", "on")


def fsync_costs(batches: list[list[PageviewRow]]) -> dict[str, list[float]]:
    """Seconds per write_batch (wall) of each variant, the variants taking turns batch by batch."""
    seconds: dict[str, list[float]] = {variant: [] for variant in FSYNC_VARIANTS}
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(f"chdb://{directory}/chdb")
        store.migrate()
        logs = store._deduplication_logs
        for index, batch in enumerate(batches):
            drops = [Drop(batch[0].site_id, DropReason.SPAM_REFERRER, batch[0].timestamp) for _ in range(10)]
            for variant in FSYNC_VARIANTS:
                fsync = int(variant != "off")
                for table in (PAGEVIEWS, DROP_COUNTS):
                    store._client.command(
                        f"ALTER TABLE {table.name} MODIFY SETTING"
                        f" fsync_after_insert = {fsync}, fsync_part_directory = {fsync}"
                    )
                store._deduplication_logs = logs if variant == "on" else None
                started = time.perf_counter()
                store.write_batch(f"{variant}:{index}", batch, drops)
                seconds[variant].append(time.perf_counter() - started)
        store.close()
    return seconds


def print_fsync_costs(seconds: dict[str, list[float]], size: int) -> None:
    off = statistics.median(seconds["off"])
    print(f"durable inserts, {size} pageviews + 10 drops per batch ({len(seconds['off'])} per variant), medians:")
    for variant, values in seconds.items():
        median = statistics.median(values)
        print(
            f"  {variant:<9} {median * 1e3:7.2f} ms per batch  {size / median:9,.0f} pageviews/s"
            f"  +{(median - off) * 1e3:6.2f} ms against off"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=60_000, help="rows per writer")
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch")
    parser.add_argument("--naive-rows", type=int, default=200)
    parser.add_argument("--fsync", action="store_true", help="what durable inserts cost (see above)")
    args = parser.parse_args()
    if args.fsync:
        site = str(uuid.uuid4())
        pageviews = rows(args.rows, site)
        batches = [pageviews[offset : offset + args.batch] for offset in range(0, len(pageviews), args.batch)]
        print_fsync_costs(fsync_costs(batches), args.batch)
        return
    site_id = str(uuid.uuid4())
    pageviews = rows(args.rows, site_id)
    size = args.batch
    batches = [pageviews[offset : offset + size] for offset in range(0, len(pageviews), size)]
    mixed = [
        batch[: size // 2] + rows(size // 2, site_id, EventRow, name="signup", properties={"plan": "pro"})
        for batch in batches[: len(batches) // 2]
    ]
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(f"chdb://{directory}/chdb")
        store.migrate()
        warm_up = rows(size, site_id)
        for writer in (write_batch, previous_row_insert, column_insert):
            writer(store, f"warm-up:{writer.__name__}", warm_up)
        measured = rates(
            store,
            {
                "write_batch (Arrow)": write_batch,
                "previous: row insert": previous_row_insert,
                "column-oriented insert": column_insert,
            },
            batches,
        )
        measured.update(rates(store, {"write_batch, half events": write_batch}, mixed))
        measured.update(
            rates(store, {"naive: one insert per row": write_batch}, [[row] for row in pageviews[: args.naive_rows]])
        )
        store.close()

    medians = {
        name: [statistics.median(batch[i] for batch in values) for i in (0, 1)] for name, values in measured.items()
    }
    new_wall, new_cpu = medians["write_batch (Arrow)"]
    print(f"{size}-row batches ({len(batches)} per writer), medians:")
    print(f"  {'':<27} {'rows/s':>8} {'rows/CPU-s':>11}   write_batch is (wall, CPU)")
    for name, (wall, cpu) in medians.items():
        print(f"  {name:<27} {wall:>8,.0f} {cpu:>11,.0f}   {new_wall / wall:6.2f}x {new_cpu / cpu:6.2f}x this")


if __name__ == "__main__":
    main()
