"""Site stats: totals, ordered top lists, date filtering, drops summed across batches, the
``hitstream stats`` command, and the path through the worker that owns an embedded store:
answered beside its batch jobs, named when it does not answer within the reader's budget, and
asked without loading the engine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner
from rq import Queue

import workers.store.store
from hitstream.main import cli
from shared.control.sites import add_site
from shared.keys import BATCH_QUEUE, STATS_REQUESTS, STORE_QUEUE
from tests.procs import HITSTREAM, Commands, wait_until
from tests.store_owner import answering, owned
from tests.stores import event, pageview, utc
from tests.timing import late_bound
from tests.worker_context import worker_context_for
from workers.records import Drop, DropReason
from workers.runtime.context import WorkerContext
from workers.runtime.processes import BatchWorker
from workers.runtime.stats_answers import StatsQuery
from workers.stats_reader import read_site_stats
from workers.store.dsn import chdb_path, own_chdb_path, store_owner
from workers.store.opening import StoreOpening
from workers.store.store import Store, open_store
from workers.store.unavailable import StoreUnavailable

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


def test_stats_name_a_redis_that_does_not_answer_within_their_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listening socket that never answers: connecting succeeds, the first command does not.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        monkeypatch.setenv("HITSTREAM_REDIS_URL", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com", "--wait", "0.5"])
        elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert result.output == "Error: Redis at HITSTREAM_REDIS_URL did not answer within 0.5 s; try again shortly\n"
    assert elapsed < late_bound(0.5)


def test_stats_before_any_store_exists_says_what_to_do(hitstream_env: dict[str, str], real_redis: redis.Redis) -> None:
    add_site(real_redis, "shop.example.com")
    result = CliRunner().invoke(cli, ["stats", "--site", "shop.example.com"])
    assert result.exit_code == 1
    assert "hitstream migrate" in result.output


def test_stats_are_answered_by_the_worker_that_owns_the_store(
    store: Store, store_dsn: str, real_redis: redis.Redis
) -> None:
    # This process has the chdb path open and its owner lock: to the reader, it is the worker.
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    with owned(store_dsn), answering(worker_context_for(real_redis, store)):
        report = read_site_stats(store_dsn, real_redis, site_id, date(2024, 3, 1), None, 10, budget=60)
    assert report["pageviews"] == 7 and report["drops"]["site_cidr"] == 2


# The engine's modules: a call that only asks the store's owner loads none of them.
ENGINE_MODULES = {"chdb", "clickhouse_connect", "pyarrow"}


def test_stats_asked_of_the_worker_that_owns_the_store_load_no_engine(
    store: Store, store_dsn: str, real_redis: redis.Redis, hitstream_env: dict[str, str], commands: Commands
) -> None:
    site = add_site(real_redis, "shop.example.com")
    fill(store, site.id)
    with owned(store_dsn), answering(worker_context_for(real_redis, store)):
        result = commands.run(
            [HITSTREAM, "stats", "--site", "shop.example.com", "--json", "--wait", "60"],
            env={**hitstream_env, "PYTHONPROFILEIMPORTTIME": "1"},  # each import, on stderr
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["pageviews"] == 7
    loaded = {
        line.rpartition("|")[2].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "redis" in loaded and loaded.isdisjoint(ENGINE_MODULES), sorted(loaded & ENGINE_MODULES)


ANSWERED = "test:stats-answered"


def hold_until_answered(context: WorkerContext) -> None:
    """A batch job that ends only once the stats were answered: behind it, they never would be."""
    wait_until(lambda: context.redis.exists(ANSWERED) > 0, 60, "the stats to be answered")


def test_stats_are_answered_while_the_workers_rq_loop_is_inside_a_batch_job(
    store: Store, store_dsn: str, real_redis: redis.Redis
) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    context = worker_context_for(real_redis, store)
    reports: list[dict[str, Any]] = []

    def read() -> None:
        reports.append(read_site_stats(store_dsn, real_redis, site_id, None, None, 10, budget=60))
        real_redis.set(ANSWERED, 1)

    queue = Queue(BATCH_QUEUE, connection=real_redis)
    queue.enqueue(hold_until_answered)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with owned(store_dsn), answering(context):
        reader = threading.Thread(target=read)
        reader.start()
        try:
            BatchWorker(context, [queue, Queue(STORE_QUEUE, connection=real_redis)]).work(burst=True)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)  # RQ installs its own; give pytest's back
        reader.join()
    assert reports[0]["pageviews"] == 7
    assert Queue(BATCH_QUEUE, connection=real_redis).finished_job_registry.count == 1  # the job ran, and ended


@pytest.mark.parametrize("owner", ["not-answering-yet", "opening-its-store-slowly"])
def test_an_owner_that_does_not_answer_within_the_budget_is_named(
    store: Store, store_dsn: str, real_redis: redis.Redis, owner: str
) -> None:
    context = worker_context_for(real_redis, store)
    opened = threading.Event()
    context.store = StoreOpening(lambda: opened.wait(60) and store)  # type: ignore[arg-type,return-value]
    with owned(store_dsn) as path, answering(context) if owner == "opening-its-store-slowly" else nullcontext():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            read_site_stats(store_dsn, real_redis, str(uuid.uuid4()), None, None, 10, budget=1)
        elapsed = time.monotonic() - started
        opened.set()
    worker = f"the hitstream worker that owns the store at {path} (pid {os.getpid()})"
    assert (
        str(raised.value)
        == {
            "not-answering-yet": f"{worker} is not answering stats yet (it is starting or stopping); try again shortly",
            "opening-its-store-slowly": f"{worker} took the query but did not answer within 1 s (it is busy);"
            " try again shortly",
        }[owner]
    )
    assert elapsed < late_bound(1)
    assert real_redis.llen(STATS_REQUESTS) == 0, "an unanswered request must not linger"


@pytest.mark.parametrize("request_", ["past-its-deadline", "unreadable"])
def test_a_request_its_reader_gave_up_on_or_that_cannot_be_read_is_dropped_and_the_next_answered(
    store: Store, store_dsn: str, real_redis: redis.Redis, request_: str
) -> None:
    site_id = str(uuid.uuid4())
    fill(store, site_id)
    stale = StatsQuery(site_id, None, None, 10, deadline=time.time() - 1)
    real_redis.rpush(STATS_REQUESTS, stale.to_json() if request_ == "past-its-deadline" else b'{"site_id": 1')
    with owned(store_dsn), answering(worker_context_for(real_redis, store)) as answers:
        report = read_site_stats(store_dsn, real_redis, site_id, None, None, 10, budget=60)
        assert answers.is_alive()
    # Requests are answered in order: the first, read before, was dropped.
    assert report["pageviews"] == 7
    assert not real_redis.exists(stale.answer_key)


def test_an_owner_whose_store_cannot_be_opened_says_why(store: Store, store_dsn: str, real_redis: redis.Redis) -> None:
    def refuse() -> Store:
        raise StoreUnavailable("cannot open the store at chdb://here: disk on fire")

    context = worker_context_for(real_redis, store)
    context.store = StoreOpening(refuse)
    with owned(store_dsn), answering(context), pytest.raises(StoreUnavailable) as raised:
        read_site_stats(store_dsn, real_redis, str(uuid.uuid4()), None, None, 10, budget=60)
    assert str(raised.value) == (
        "the worker that owns the store could not read stats: cannot open the store at chdb://here: disk on fire"
    )


def test_a_store_another_process_keeps_open_is_named_without_the_engines_internals(
    store: Store, store_dsn: str, real_redis: redis.Redis
) -> None:
    # This process has the chdb path open without the owner lock: a migration, another reader.
    path = chdb_path(store_dsn)
    with pytest.raises(StoreUnavailable) as raised:
        read_site_stats(store_dsn, real_redis, str(uuid.uuid4()), None, None, 10, budget=0.5)
    assert str(raised.value) == (
        f"the chdb store at {path} is open in another process (only one process may open it),"
        " and it was not closed within 0.5 s; try again shortly"
    )


# Runs in a child process: opens the chdb store at argv[1], says so, and keeps it open.
_HOLD_STORE = """
import sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


def test_a_store_another_process_opens_right_after_the_reader_saw_it_free_is_named_without_the_engines_line(
    tmp_path: Path,
    real_redis: redis.Redis,
    commands: Commands,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A worker starting, or a migration, opened the store between the reader's look and its
    # open: chdb then writes why it cannot open it ("Cannot lock file ...") to stderr itself.
    path = tmp_path / "store"
    holder = commands.start(
        [sys.executable, "-c", _HOLD_STORE, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    monkeypatch.setattr(workers.store.store, "chdb_path_in_use", lambda path: False)  # the reader's look
    capfd.readouterr()

    with pytest.raises(StoreUnavailable) as raised:
        read_site_stats(f"chdb://{path}", real_redis, str(uuid.uuid4()), None, None, 10, budget=0.5)

    assert str(raised.value) == (
        f"the chdb store at {path} is open in another process (only one process may open it),"
        " and it was not closed within 0.5 s; try again shortly"
    )
    assert capfd.readouterr().err == ""


def test_a_worker_taking_the_store_is_never_refused_by_a_reader_probing_its_lock(tmp_path: Path) -> None:
    probing = threading.Event()
    seen: set[int | None] = set()

    def probe() -> None:
        while not probing.is_set():
            seen.add(store_owner(tmp_path))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(300):
            os.close(own_chdb_path(tmp_path))  # raises StoreOwned if a probe were taken for an owner
    finally:
        probing.set()
        prober.join()
    assert seen <= {None, 0, os.getpid()}
    descriptor = own_chdb_path(tmp_path)
    try:
        assert store_owner(tmp_path) == os.getpid()
    finally:
        os.close(descriptor)
    assert store_owner(tmp_path) is None
