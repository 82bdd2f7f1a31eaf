"""Site stats: totals, ordered top lists, date filtering, drops summed across batches, the
``hitstream stats`` command, and the path through the worker that owns an embedded store."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from datetime import date
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner
from rq import Queue

from hitstream.main import cli
from shared.control.sites import add_site
from shared.keys import STORE_QUEUE
from tests.procs import wait_until
from tests.stores import event, pageview, utc
from tests.timing import late_bound
from tests.worker_context import worker_context_for
from workers.records import Drop, DropReason
from workers.runtime.processes import BatchWorker
from workers.stats_reader import read_site_stats
from workers.store import Store, StoreUnavailable, open_store

LIST_KEYS = {
    "pages",
    "referrers",
    "countries",
    "cities",
    "browsers",
    "os",
    "devices",
    "utm_sources",
    "utm_campaigns",
    "qr_codes",
    "providers",
    "events",
}
QR = str(uuid.uuid4())


def fill(store: Store, site_id: str) -> None:
    """Known traffic: 6 pageviews from 3 sessions in March, 1 in April, plus another site; events:
    2 signups and 1 click in March, 1 signup in April (they count in no pageview figure)."""
    alice, bob, carol = (str(uuid.uuid4()) for _ in range(3))
    march = [
        pageview(
            site_id,
            utc(2024, 3, 1, 9),
            session_id=alice,
            path="/",
            country="DE",
            city="Berlin",
            browser="Firefox",
            os="Linux",
            device_type="desktop",
            referrer_host="news.example.org",
            utm_source="newsletter",
            utm_campaign="spring",
            provider="Telekom",
            qr_id=QR,
        ),
        pageview(
            site_id,
            utc(2024, 3, 1, 9, 1),
            session_id=alice,
            path="/pricing",
            country="DE",
            city="Berlin",
            browser="Firefox",
            os="Linux",
            device_type="desktop",
            provider="Telekom",
        ),
        pageview(
            site_id,
            utc(2024, 3, 2, 10),
            session_id=bob,
            path="/",
            country="FR",
            city="Paris",
            browser="Chrome",
            os="Windows",
            device_type="desktop",
            referrer_host="news.example.org",
            utm_source="newsletter",
            utm_campaign="spring",
            provider="Orange",
        ),
        pageview(
            site_id,
            utc(2024, 3, 2, 10, 5),
            session_id=bob,
            path="/",
            country="FR",
            city="Paris",
            browser="Chrome",
            os="Windows",
            device_type="desktop",
            provider="Orange",
        ),
        pageview(
            site_id,
            utc(2024, 3, 31, 23, 59),
            session_id=carol,
            path="/blog",
            country="DE",
            city="Munich",
            browser="Safari",
            os="iOS",
            device_type="mobile",
            referrer_host="search.example",
            utm_source="ads",
            provider="Telekom",
        ),
        pageview(
            site_id,
            utc(2024, 3, 31, 23, 59, 30),
            session_id=carol,
            path="/",
            country="DE",
            city="Munich",
            browser="Safari",
            os="iOS",
            device_type="mobile",
            provider="Telekom",
        ),
    ]
    april = [pageview(site_id, utc(2024, 4, 1, 0, 0, 1), session_id=carol, path="/april", country="US")]
    other_site = [
        pageview(str(uuid.uuid4()), utc(2024, 3, 5), path="/elsewhere"),
        event(str(uuid.uuid4()), utc(2024, 3, 5), "click", {}),
    ]
    events = [
        event(site_id, utc(2024, 3, 1, 9, 2), "signup", {"plan": "pro"}, session_id=alice),
        event(site_id, utc(2024, 3, 2, 10, 1), "click", {}, session_id=bob),
        event(site_id, utc(2024, 3, 2, 10, 2), "signup", {"plan": "free"}, session_id=bob),
        event(site_id, utc(2024, 4, 1, 0, 1), "signup", {}, session_id=carol),
    ]
    store.write_batch("b:1", march[:3], [Drop(site_id, DropReason.SPAM_REFERRER, utc(2024, 3, 1, 9))] * 2)
    store.write_batch(
        "b:2",
        march[3:] + april + other_site + events,
        [
            Drop(site_id, DropReason.SPAM_REFERRER, utc(2024, 3, 1, 9, 0, 30)),
            Drop(site_id, DropReason.SITE_CIDR, utc(2024, 3, 3)),
            Drop(site_id, DropReason.SITE_CIDR, utc(2024, 4, 2)),
        ],
    )


def top(report: dict[str, Any], key: str) -> list[tuple[str, int]]:
    return [(item["value"], item["pageviews"]) for item in report[key]]


def test_all_time_stats_for_one_site(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    report = store.site_stats(site_id, None, None)
    assert LIST_KEYS <= report.keys()
    assert (report["pageviews"], report["visitors"]) == (7, 3)
    assert top(report, "pages") == [("/", 4), ("/april", 1), ("/blog", 1), ("/pricing", 1)]
    assert top(report, "countries") == [("DE", 4), ("FR", 2), ("US", 1)]
    assert top(report, "cities") == [("Berlin", 2), ("Munich", 2), ("Paris", 2)]
    assert top(report, "referrers") == [("news.example.org", 2), ("search.example", 1)]
    assert top(report, "browsers") == [("Chrome", 2), ("Firefox", 2), ("Safari", 2)]
    assert top(report, "os") == [("Linux", 2), ("Windows", 2), ("iOS", 2)]
    assert top(report, "devices") == [("desktop", 4), ("mobile", 2), ("other", 1)]
    assert top(report, "utm_sources") == [("newsletter", 2), ("ads", 1)]
    assert top(report, "utm_campaigns") == [("spring", 2)]
    assert top(report, "qr_codes") == [(QR, 1)]
    assert top(report, "providers") == [("Telekom", 4), ("Orange", 2)]
    assert top(report, "events") == [("signup", 3), ("click", 1)]
    # Drops from two batches, summed per reason, most first.
    assert report["drops"] == {"spam_referrer": 3, "site_cidr": 2}
    assert list(report["drops"]) == ["spam_referrer", "site_cidr"]


def test_date_range_is_inclusive_and_filters_drops(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    march = store.site_stats(site_id, date(2024, 3, 1), date(2024, 3, 31))
    assert (march["pageviews"], march["visitors"]) == (6, 3)
    assert march["drops"] == {"spam_referrer": 3, "site_cidr": 1}
    assert top(march, "events") == [("signup", 2), ("click", 1)]
    second_day = store.site_stats(site_id, date(2024, 3, 2), date(2024, 3, 2))
    assert (second_day["pageviews"], top(second_day, "pages")) == (2, [("/", 2)])
    assert second_day["drops"] == {}
    from_april = store.site_stats(site_id, date(2024, 4, 1), None)
    assert (from_april["pageviews"], from_april["drops"]) == (1, {"site_cidr": 1})


def test_limit_caps_every_list(store: Store) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    report = store.site_stats(site_id, None, None, limit=1)
    assert top(report, "pages") == [("/", 4)]
    assert all(len(report[key]) <= 1 for key in LIST_KEYS)


def stored_site(real_redis: redis.Redis, store_dsn: str) -> str:
    """A site registered in Redis whose known traffic is in the (then closed) store."""
    site = add_site(real_redis, "shop.example.com")
    opened = open_store(store_dsn)
    try:
        opened.migrate()
        fill(opened, site.id)
    finally:
        opened.close()
    return site.id


def test_stats_command_prints_json(hitstream_env: dict[str, str], real_redis: redis.Redis) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    result = CliRunner().invoke(
        cli, ["stats", "--site", "www.Shop.example.com", "--from", "2024-03-01", "--to", "2024-03-31", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert (report["pageviews"], report["visitors"], report["drops"]) == (6, 3, {"spam_referrer": 3, "site_cidr": 1})
    assert report["pages"][0] == {"value": "/", "pageviews": 4}
    assert LIST_KEYS <= report.keys()


def test_stats_command_prints_tables(hitstream_env: dict[str, str], real_redis: redis.Redis) -> None:
    stored_site(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])
    result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Pageviews  7" in lines and "Visitors   3" in lines
    for title in (
        "Pages",
        "Referrers",
        "Countries",
        "Cities",
        "Browsers",
        "Operating systems",
        "Devices",
        "UTM sources",
        "UTM campaigns",
        "QR codes",
        "Providers",
        "Events (name)",
        "Dropped (reason)",
    ):
        assert any(line.startswith(title) for line in lines), title
    assert any(line.split() == ["spam_referrer", "3"] for line in lines)


def test_stats_command_names_an_unknown_site(hitstream_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["stats", "--site", "nowhere.example"])
    assert result.exit_code == 2
    assert "--site" in result.output and "nowhere.example" in result.output


def test_stats_before_any_store_exists_says_what_to_do(hitstream_env: dict[str, str], real_redis: redis.Redis) -> None:
    add_site(real_redis, "shop.example.com")
    result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com"])
    assert result.exit_code == 1
    assert "hitstream migrate" in result.output


def test_stats_go_through_the_worker_that_owns_the_store(store: Store, store_dsn: str, real_redis: redis.Redis) -> None:
    # This process has the chdb path open, so to the reader it is owned by someone else.
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    answers: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: answers.append(read_site_stats(store_dsn, real_redis, site_id, date(2024, 3, 1), None, 10))
    )
    reader.start()
    queue = Queue(STORE_QUEUE, connection=real_redis)
    wait_until(lambda: queue.count == 1, 60, "the reader's query to be queued")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        BatchWorker(worker_context_for(real_redis, store), [queue]).work(burst=True)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)  # RQ installs its own; give pytest's back
    reader.join(timeout=10)
    assert answers and answers[0]["pageviews"] == 7 and answers[0]["drops"]["site_cidr"] == 2


def test_no_worker_answering_is_a_clear_error(store: Store, store_dsn: str, real_redis: redis.Redis) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no worker answered on RQ queue 'hitstream-store'"):
        read_site_stats(store_dsn, real_redis, str(uuid.uuid4()), None, None, 10, timeout=1)
    assert time.monotonic() - started < late_bound(1)
    assert Queue(STORE_QUEUE, connection=real_redis).count == 0, "the unanswered job must not linger"
