"""Store write throughput: write_batch in 1000-row batches into a fresh chdb path, against the
naive design (one insert per pageview) measured in the same run.

    .venv/bin/python bench/store_bench.py [--rows 100000] [--naive-rows 500]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from workers.records import PageviewRow
from workers.store import open_store

BATCH = 1000
PATHS = [f"/blog/post-{i}" for i in range(200)] + ["/", "/pricing", "/docs"]
AGENTS = [f"Mozilla/5.0 (X11; Linux x86_64) Firefox/{v}.0" for v in range(100, 130)]


def rows(count: int, site_id: str) -> list[PageviewRow]:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    return [
        PageviewRow(
            site_id=site_id, timestamp=start + timedelta(seconds=i), received_at=start + timedelta(seconds=i),
            page_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), hostname="example.com",
            path=random.choice(PATHS), query="a=1", referrer="https://news.example.org/x",
            referrer_host="news.example.org", utm_source=random.choice([None, "newsletter"]), country="DE",
            city="Berlin", asn=3320, provider="Telekom", user_agent=random.choice(AGENTS), browser="Firefox",
            browser_version="125", os="Linux", device_type="desktop", language="de", screen_width=1920,
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(f"chdb://{directory}/chdb")
        store.migrate()
        site_id = str(uuid.uuid4())
        batched, naive = rows(args.rows, site_id), rows(args.naive_rows, site_id)

        started = time.perf_counter()
        for offset in range(0, len(batched), BATCH):
            store.write_batch(f"b:{offset}", batched[offset : offset + BATCH], [])
        batched_rate = len(batched) / (time.perf_counter() - started)

        started = time.perf_counter()
        for index, row in enumerate(naive):
            store.write_batch(f"n:{index}", [row], [])
        naive_rate = len(naive) / (time.perf_counter() - started)
        store.close()
    print(f"write_batch, {BATCH}-row batches: {batched_rate:,.0f} rows/s ({args.rows:,} rows)")
    print(f"naive, one insert per pageview:  {naive_rate:,.0f} rows/s ({args.naive_rows:,} rows)")
    print(f"ratio: {batched_rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()
