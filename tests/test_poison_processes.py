"""Poison in the store and in the stream, and one worker per embedded store: real ``hitstream``
processes on the suite's Redis and chdb stores, each test ending with an exact count.

- Rows the store refuses (an operator's constraint on pageviews, events or drop counts) are
  dead-lettered with the store's error; their neighbours and every batch behind them are
  stored once, before a lease could expire (no re-claim, no retry loop).
- Envelopes that decode but carry wrong types are dead-lettered (step "envelope"), never
  inserted, never retried; entries that do not decode at all, likewise (step "decode").
- A historical replay spread over 20 years, sent with ``hitstream replay`` through the real
  API in random line order (every batch spans up to 240 months), lands completely, once.
- A second worker on a store another worker owns exits at once with one clear line, also when
  both start together, and ``hitstream stats`` keeps answering through the owner.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from hitstream.replay.inputfile import file_identity, page_id_for
from shared import keys
from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, add_exclusion
from shared.control.sites import site_for_domain
from shared.envelope import Envelope
from tests.procs import HITSTREAM, START_SECONDS, Processes, alter_store, drained, query_store, stored_pages, wait_until
from tests.traffic import VISITOR_IPS, ingest_token, queued_envelope
from workers.batch import dead_letters

DOMAIN = "example.com"


def envelope(site_id: str, path: str = "/", **fields: Any) -> Envelope:
    return replace(queued_envelope(site_id, f"https://{DOMAIN}{path}", VISITOR_IPS[0]), **fields)


def send(client: redis.Redis, entries: list[bytes]) -> list[str]:
    """XADD each entry (envelope JSON) in order; returns the stream entry ids."""
    with client.pipeline(transaction=False) as pipe:
        for data in entries:
            pipe.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: data})
        return [entry_id.decode() for entry_id in pipe.execute()]


def site_id(client: redis.Redis) -> str:
    ingest_token(client, DOMAIN)
    site = site_for_domain(client, DOMAIN)
    assert site is not None
    return site.id


# table whose constraint refuses a row -> (constraint, the envelope fields that break it)
REFUSING_CONSTRAINTS = {
    "pageviews": ("path != '/forbidden'", {"path": "/forbidden"}),
    "events": ("name != 'forbidden'", {"kind": "event", "event_name": "forbidden"}),
    "drop_counts": ("reason != 'instance_path'", {"path": "/private/x"}),
}


@pytest.mark.parametrize("table", list(REFUSING_CONSTRAINTS))
# 2: two enrichers hand their batches to the process that writes (worker -n 2 on a chdb store).
@pytest.mark.parametrize("worker_processes", [1, 2], ids=["one-process", "enrichers-and-writer"])
def test_rows_the_store_refuses_are_dead_lettered_and_the_batches_behind_them_stored_within_one_claim_cycle(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, table: str, worker_processes: int
) -> None:
    claim_timeout = 60.0
    site = site_id(real_redis)
    add_exclusion(real_redis, INSTANCE_SCOPE, ExclusionKind.PATH, "/private")
    store = tmp_path / "store"
    constraint, fields = REFUSING_CONSTRAINTS[table]
    alter_store(store, f"ALTER TABLE {table} ADD CONSTRAINT refuse_poison CHECK {constraint}")
    path = fields.get("path", "/")
    poison_fields = {name: value for name, value in fields.items() if name != "path"}
    # The first batch (100 entries) holds three refused rows; four good batches queue behind it.
    good = [envelope(site, f"/{n}") for n in range(497)]
    poison = [envelope(site, path, **poison_fields) for _ in range(3)]
    order = [*good[:10], poison[0], *good[10:60], poison[1], *good[60:97], poison[2], *good[97:]]
    ids = send(real_redis, [item.to_json() for item in order])

    worker = processes.worker(store, batch_size=100, claim_timeout=claim_timeout, processes=worker_processes)
    worker.wait_ready(real_redis)
    started = time.monotonic()
    wait_until(lambda: drained(real_redis), claim_timeout, "the queue to drain before any lease expires", interval=0.1)
    print(
        f"refused rows in table {table}: 500 envelopes drained "
        f"{time.monotonic() - started:.1f} s after the worker was ready"
    )
    assert worker.stop() == 0

    assert "store unavailable" not in worker.output()
    pages, drops = stored_pages(store)
    assert pages == Counter(item.page_id for item in good)
    assert drops == {}
    letters = dead_letters.list_dead_letters(real_redis)
    refused_ids = [entry_id for entry_id, item in zip(ids, order, strict=True) if item in poison]
    assert [(letter.id, letter.step) for letter in letters] == [(entry_id, "store") for entry_id in refused_ids]
    assert all("Code: 469" in letter.error and "refuse_poison" in letter.error for letter in letters)
    assert [letter.envelope["page_id"] for letter in letters] == [item.page_id for item in poison]
    assert all(ip not in letter.to_json().decode() for letter in letters for ip in VISITOR_IPS)
    assert query_store(store, "SELECT count() FROM events") == [[0]]


def wrong_types(site: str) -> dict[str, tuple[bytes, str, str]]:
    """Stream entries that are no storable envelope -> (entry, dead-letter step, error mark)."""

    def entry(**changes: Any) -> bytes:
        # The object form (older APIs, requeued dead letters): it names the field changed.
        values = dataclasses.asdict(envelope(site))
        values.update(changes)
        return json.dumps(values).encode()  # the standard library writes any integer, orjson 64 bits only

    return {
        "language a number": (entry(language=5), "envelope", "language must be a string"),
        "screen_width 2**40": (entry(screen_width=2**40), "envelope", "screen_width must be between 0 and 4294967295"),
        "screen_height true": (entry(screen_height=True), "envelope", "screen_height must be an integer"),
        "site_id no UUID": (entry(site_id="site-1"), "envelope", "site_id must be a UUID"),
        "page_id a number": (entry(page_id=12345), "envelope", "page_id must be a UUID"),
        "timestamp before 1970": (entry(timestamp_ms=-86_400_000), "envelope", "timestamp_ms must be between"),
        "timestamp text": (entry(timestamp_ms="2026-01-01"), "envelope", "timestamp_ms must be an integer"),
        "url null": (entry(url=None), "envelope", "url must be a string"),
        "nested property": (
            entry(kind="event", event_name="e", event_properties={"a": {"b": 1}}),
            "envelope",
            "event_properties['a'] must be a string",
        ),
        "unknown kind": (entry(kind="click"), "envelope", "kind must be one of"),
        # orjson reads an integer past 64 bits as a float.
        "screen_width 2**70": (entry(screen_width=2**70), "envelope", "screen_width must be an integer, not float"),
        "unknown field": (entry(colour="red"), "decode", "unexpected keyword argument"),
        "not JSON": (b"{'site_id': 1", "decode", ""),
    }


def test_envelopes_of_the_wrong_types_are_dead_lettered_and_their_neighbours_stored_once(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    site = site_id(real_redis)
    bad = wrong_types(site)
    good = [envelope(site, f"/{n}") for n in range(3 * len(bad))]
    entries: list[bytes] = []
    for n, (data, _, _) in enumerate(bad.values()):
        entries += [good[3 * n].to_json(), data, good[3 * n + 1].to_json(), good[3 * n + 2].to_json()]
    ids = send(real_redis, entries)
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=10)

    wait_until(lambda: drained(real_redis), 60, "the queue to drain")
    assert worker.stop() == 0

    assert stored_pages(store)[0] == Counter(item.page_id for item in good)
    letters = {letter.id: letter for letter in dead_letters.list_dead_letters(real_redis)}
    assert sorted(letters) == sorted(ids[1::4])
    for entry_id, (name, (_, step, mark)) in zip(ids[1::4], bad.items(), strict=True):
        assert (letters[entry_id].step, mark in letters[entry_id].error) == (step, True), name
    assert all(ip not in letter.to_json().decode() for letter in letters.values() for ip in VISITOR_IPS)
    assert "store unavailable" not in worker.output()


def test_a_historical_replay_spread_over_20_years_in_random_order_lands_completely(
    processes: Processes, real_redis: redis.Redis, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    secret = ingest_token(real_redis, DOMAIN, bulk=True)  # hitstream replay asks for the bulk lane
    lines = 2400
    first = datetime(2006, 1, 1, tzinfo=UTC)
    span = datetime.now(UTC) - timedelta(days=1) - first
    times = [first + span * n / lines for n in range(lines)]
    random.Random(20).shuffle(times)  # every batch of 1000 spans about 240 months
    views = tmp_path / "history.ndjson"
    views.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "url": f"https://{DOMAIN}/archive/{n}",
                    "timestamp": moment.isoformat().replace("+00:00", "Z"),
                    "visitor_ip": VISITOR_IPS[n % len(VISITOR_IPS)],
                    "user_agent": "Mozilla/5.0 replay",
                }
            )
            + b"\n"
            for n, moment in enumerate(times)
        )
    )
    store = tmp_path / "store"
    api = processes.api()
    worker = processes.worker(store, batch_size=1000, claim_timeout=120)

    replayed = subprocess.run(
        [HITSTREAM, "replay", str(views), "--url", api.url, "--quiet", "--endpoint", "batch"],
        env={**hitstream_env, "HITSTREAM_TOKEN": secret},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert f"accepted: {lines}" in replayed.stdout
    started = time.monotonic()
    wait_until(lambda: drained(real_redis), 240, "the replay to be stored", interval=0.2)
    print(
        f"20-year replay: {lines} pageviews over 240 months stored "
        f"{time.monotonic() - started:.1f} s after the replay ended"
    )
    assert worker.stop() == 0

    identity = file_identity(views)
    assert stored_pages(store)[0] == Counter(page_id_for(identity, n) for n in range(1, lines + 1))
    months = query_store(store, "SELECT uniqExact(toYYYYMM(timestamp)), min(timestamp) < '2006-02-01' FROM pageviews")
    assert months == [[len({(moment.year, moment.month) for moment in times}), True]]
    assert dead_letters.count(real_redis) == 0


def stats_pageviews(env: dict[str, str]) -> int:
    answered = subprocess.run(
        [HITSTREAM, "stats", "--site", DOMAIN, "--json", "--wait", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answered.returncode == 0, answered.stderr
    return int(orjson.loads(answered.stdout)["pageviews"])


def test_a_second_worker_on_an_owned_store_exits_with_one_clear_line_and_stats_answer_through_the_owner(
    processes: Processes, real_redis: redis.Redis, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    site = site_id(real_redis)
    store = tmp_path / "store"
    owner = processes.worker(store)
    owner.wait_ready(real_redis)
    sent = [envelope(site, f"/{n}") for n in range(300)]
    send(real_redis, [item.to_json() for item in sent[:100]])

    for _ in range(2):  # refused every time, not only while the owner is starting
        second = processes.worker(store)
        assert second.process.wait(START_SECONDS) == 1
        (line,) = second.output().strip().splitlines()
        assert line.startswith(
            f"Error: the chdb store at {store} is owned by another hitstream worker (pid {owner.pid})"
        )
    send(real_redis, [item.to_json() for item in sent[100:]])
    wait_until(lambda: drained(real_redis), 60, "the owner to store everything")
    assert stats_pageviews({**hitstream_env, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{store}"}) == 300
    assert owner.running()
    assert owner.stop() == 0
    assert stored_pages(store)[0] == Counter(item.page_id for item in sent)


@pytest.mark.parametrize("round_", range(3))
def test_of_two_workers_started_together_on_one_store_exactly_one_works(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, round_: int
) -> None:
    site = site_id(real_redis)
    store = tmp_path / "store"
    sent = [envelope(site, f"/{n}") for n in range(2000)]
    send(real_redis, [item.to_json() for item in sent])
    pair = [processes.worker(store, batch_size=500), processes.worker(store, batch_size=500)]

    wait_until(lambda: any(not worker.running() for worker in pair), START_SECONDS, "one of the two to exit")
    (loser,) = [worker for worker in pair if not worker.running()]
    (winner,) = [worker for worker in pair if worker is not loser]
    assert loser.process.returncode == 1 and f"(pid {winner.pid})" in loser.output()
    wait_until(lambda: drained(real_redis), 60, "the winner to store everything")
    assert winner.stop() == 0
    assert stored_pages(store)[0] == Counter(item.page_id for item in sent)
