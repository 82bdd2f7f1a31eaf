"""``hitstream worker -n N`` on an embedded store: N enricher processes hand their batches to
one writer process, on the real Redis and a real chdb store. Exact counts after SIGKILLs of
any process at many moments; stats while they run; what ``hitstream queue`` and /metrics show
of the batches a stopped writer holds back; SIGTERM stops them all."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis
import rq
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from hitstream.main import cli
from shared import keys
from shared.backlog import queue_backlog
from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, add_exclusion
from shared.envelope import Envelope
from shared.keys import BATCH_QUEUE, STORE_QUEUE
from shared.lanes import LANE_KEYS, Lane
from tests.endpoint import client_for
from tests.procs import (
    Processes,
    Worker,
    drained,
    redis_clock_ms,
    signal_a_thread_other_than_main,
    stored_pages,
    wait_for_redis_clock,
    wait_until,
)
from tests.traffic import queued_envelope
from workers.batch.delivery import ENRICHED_MAX_WAITING
from workers.stats_reader import read_site_stats

SITE = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"


@pytest.fixture(autouse=True)
def private_paths_dropped(real_redis: redis.Redis) -> None:
    """Every 50th pageview (path /private) is dropped, so drop counts travel the hand-off too."""
    add_exclusion(real_redis, INSTANCE_SCOPE, ExclusionKind.PATH, "/private")


def envelope(n: int) -> Envelope:
    return queued_envelope(
        SITE, f"https://example.com/{n}" if n % 50 else "https://example.com/private", "198.51.100.23"
    )


def send(client: redis.Redis, count: int, lane: Lane = Lane.LIVE, at_once: bool = False) -> list[str]:
    """``count`` pageviews into ``lane``; ``at_once``: in one transaction, so every claim
    takes a full batch."""
    envelopes = [envelope(n) for n in range(count)]
    with client.pipeline(transaction=at_once) as pipe:
        for env in envelopes:
            pipe.xadd(LANE_KEYS[lane].stream, {keys.ENVELOPE_FIELD: env.to_json(), keys.TOKEN_FIELD: "sender"})
        pipe.hincrby(LANE_KEYS[lane].queued_by_token, "sender", count)  # as the API counts them
        pipe.execute()
    return [env.page_id for env in envelopes]


def all_stored(client: redis.Redis) -> bool:
    """Nothing waits in a lane, in a lease or in the enriched stream."""
    return drained(client) and client.xlen(keys.ENRICHED_STREAM) == 0


def role_pids(client: redis.Redis, worker: Worker, queue: str) -> list[int]:
    """The pids of ``worker``'s processes registered with RQ on ``queue`` (store: the writer;
    batches: the enrichers)."""
    pids = worker.pids()
    registered = rq.Worker.all(connection=client, queue=rq.Queue(queue, connection=client))
    return [registered_worker.pid for registered_worker in registered if registered_worker.pid in pids]


def wait_for_roles(client: redis.Redis, worker: Worker, enrichers: int) -> tuple[int, list[int]]:
    # The roles are returned as the read that found them complete saw them: a second read
    # could fall while the supervisor replaces a role killed a moment before.
    found: list[tuple[list[int], list[int]]] = []

    def complete() -> bool:
        assert worker.running(), worker.output()
        writers, batchers = role_pids(client, worker, STORE_QUEUE), role_pids(client, worker, BATCH_QUEUE)
        found[:] = [(writers, batchers)]
        return len(writers) == 1 and len(batchers) == enrichers

    wait_until(complete, 60, f"one writer and {enrichers} enrichers to register")
    ((writer,), batchers) = found[0]
    return writer, batchers


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Process ``pid`` SIGSTOPped (hung, as far as the others can tell) until the block ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def kill(pid: int) -> None:
    try:
        psutil.Process(pid).kill()
    except psutil.NoSuchProcess:
        pass


def assert_stored_exactly_once(client: redis.Redis, worker: Worker, store: Path, sent: list[str]) -> None:
    wait_until(lambda: all_stored(client), 120, "every pageview stored and acknowledged", interval=0.1)
    assert worker.stop(60) == 0
    pages, drops = stored_pages(store)
    assert pages == Counter(page for n, page in enumerate(sent) if n % 50)
    assert drops == {"instance_path": len(sent[::50])}
    assert client.hlen(LANE_KEYS[Lane.LIVE].queued_by_token) == 0  # each entry counted off exactly once
    assert client.zcard(LANE_KEYS[Lane.LIVE].leases) == 0


def test_two_enrichers_hand_every_batch_to_one_writer_and_sigterm_stops_them_all(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    sent = send(real_redis, 20_000)
    worker = processes.worker(store, batch_size=500, processes=2)
    writer, enrichers = wait_for_roles(real_redis, worker, 2)
    children = worker.pids() - {worker.pid}

    assert_stored_exactly_once(real_redis, worker, store, sent)

    assert {writer, *enrichers} <= children  # (with multiprocessing's resource tracker)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in children)


def _enricher_holding_a_batch(client: redis.Redis, worker: Worker) -> int:
    wait_until(lambda: client.zcard(keys.BATCH_LEASES) > 0, 30, "a claimed batch")
    return random.choice(role_pids(client, worker, BATCH_QUEUE))


def _writer_holding_a_batch(client: redis.Redis, worker: Worker) -> int:
    # A pending enriched entry: the writer read it and is inserting, or inserted and not yet acknowledged.
    wait_until(
        lambda: client.xpending(keys.ENRICHED_STREAM, keys.ENRICHED_GROUP)["pending"] > 0,
        30,
        "the writer holding a batch",
        interval=0.001,
    )
    (writer,) = role_pids(client, worker, STORE_QUEUE)
    return writer


def _writer_between_batches(client: redis.Redis, worker: Worker) -> int:
    wait_until(lambda: client.xlen(keys.ENRICHED_STREAM) > 0, 30, "an enriched batch waiting", interval=0.001)
    (writer,) = role_pids(client, worker, STORE_QUEUE)
    return writer


@pytest.mark.parametrize(
    "victim",
    [_enricher_holding_a_batch, _writer_holding_a_batch, _writer_between_batches],
    ids=["enricher-mid-batch", "writer-mid-insert-or-ack", "writer-with-batches-waiting"],
)
def test_a_sigkilled_enricher_or_writer_is_replaced_and_nothing_is_lost_or_doubled(
    processes: Processes,
    real_redis: redis.Redis,
    tmp_path: Path,
    victim: Callable[[redis.Redis, Worker], int],
) -> None:
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=500, claim_timeout=2.0, processes=2)
    wait_for_roles(real_redis, worker, 2)
    sent = send(real_redis, 20_000)

    victim_pid = victim(real_redis, worker)
    kill(victim_pid)
    wait_until(lambda: victim_pid not in worker.pids(), 10, "the killed process to be gone")
    writer, enrichers = wait_for_roles(real_redis, worker, 2)  # the supervisor replaced it
    assert victim_pid not in {writer, *enrichers}
    assert "starting its replacement" in worker.output()

    assert_stored_exactly_once(real_redis, worker, store, sent)


def test_ten_sigkills_of_random_processes_at_random_moments_lose_and_double_nothing(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=250, claim_timeout=2.0, processes=2)
    wait_for_roles(real_redis, worker, 2)
    sent = send(real_redis, 30_000)
    rng = random.Random(12)

    for _ in range(10):
        writer, enrichers = wait_for_roles(real_redis, worker, 2)
        time.sleep(rng.uniform(0, 0.6))
        kill(rng.choice([writer, *enrichers]))

    assert_stored_exactly_once(real_redis, worker, store, sent)


def test_stats_are_answered_by_the_writer_while_the_enrichers_run(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=500, processes=2)
    wait_for_roles(real_redis, worker, 2)
    sent = send(real_redis, 30_000)

    during = read_site_stats(f"chdb://{store}", real_redis, SITE, date(2020, 1, 1), None, 10, budget=60)
    wait_until(lambda: all_stored(real_redis), 120, "every pageview stored", interval=0.1)
    after = read_site_stats(f"chdb://{store}", real_redis, SITE, date(2020, 1, 1), None, 10, budget=60)

    assert 0 <= during["pageviews"] <= after["pageviews"] == len(sent) - len(sent[::50])
    assert after["drops"] == {"instance_path": len(sent[::50])}
    assert worker.stop(60) == 0


def test_children_of_a_sigkilled_supervisor_stop_and_the_next_worker_stores_the_rest_once(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = processes.worker(store, batch_size=500, processes=2)
    writer, enrichers = wait_for_roles(real_redis, first, 2)
    sent = send(real_redis, 20_000)
    wait_until(lambda: real_redis.xlen(keys.ENRICHED_STREAM) > 0, 30, "a batch handed to the writer", interval=0.001)

    first.process.kill()  # the supervisor only: its children notice and shut down
    first.process.wait()
    wait_until(lambda: not any(psutil.pid_exists(pid) for pid in (writer, *enrichers)), 30, "orphans to stop")
    second = processes.worker(store, batch_size=500, processes=2)
    wait_for_roles(real_redis, second, 2)

    assert_stored_exactly_once(real_redis, second, store, sent)


def test_ctrl_c_stops_every_process_warm_and_the_next_worker_stores_the_rest_once(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = processes.worker(store, batch_size=500, processes=2)
    wait_for_roles(real_redis, first, 2)
    sent = send(real_redis, 30_000)
    wait_until(lambda: real_redis.xlen(keys.ENRICHED_STREAM) > 0, 30, "a batch handed to the writer", interval=0.001)

    for pid in first.pids():  # what a terminal's Ctrl-C does: SIGINT to every process of the job
        os.kill(pid, signal.SIGINT)
    assert first.process.wait(60) == 0
    assert "stopped with exit code" not in first.output()
    assert "died" not in first.output()

    second = processes.worker(store, batch_size=500, processes=2)
    wait_for_roles(real_redis, second, 2)
    assert_stored_exactly_once(real_redis, second, store, sent)


def started_roles(worker: Worker) -> int:
    """How many role processes ``worker``'s supervisor has started (not counting
    multiprocessing's resource tracker), whether or not they are ready."""
    count = 0
    for child in psutil.Process(worker.pid).children():
        try:
            count += "--multiprocessing-fork" in child.cmdline()
        except psutil.Error:  # it ended
            pass
    return count


@pytest.mark.parametrize("moment", ["its processes started", "a process registered"])
def test_ctrl_c_while_the_processes_start_stops_every_one_warm(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, moment: str
) -> None:
    worker = processes.worker(tmp_path / "store", processes=2)
    if moment == "its processes started":  # each still importing, or building its context
        wait_until(lambda: started_roles(worker) == 3, 30, "the supervisor to start three processes", interval=0.001)
    else:  # RQ registers a worker before it installs its signal handlers
        wait_until(
            lambda: bool(role_pids(real_redis, worker, BATCH_QUEUE) or role_pids(real_redis, worker, STORE_QUEUE)),
            60,
            "a process to register with RQ",
            interval=0.001,
        )

    for pid in worker.pids():
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    assert worker.process.wait(60) == 0, worker.output()
    for sign in ("stopped with exit code", "died", "Traceback"):
        assert sign not in worker.output()


def stops_warm_on_a_sigterm_another_thread_takes(worker: Worker, target: int) -> None:
    """SIGTERM to a thread of ``target`` (one of ``worker``'s processes) other than its main one:
    ``target`` stops within 30 s, warm, and its supervisor does not take it for a crash."""
    signal_a_thread_other_than_main(target, signal.SIGTERM)

    psutil.Process(target).wait(30)
    assert f"[PID {target}]: warm shut down requested" in worker.output()
    assert "died" not in worker.output()


@pytest.mark.parametrize("role", ["writer", "enricher"])
def test_a_sigterm_that_a_thread_other_than_the_main_one_takes_stops_that_process_warm(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, role: str
) -> None:
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=5, processes=2)
    writer, enrichers = wait_for_roles(real_redis, worker, 2)
    sent = send(real_redis, 20, at_once=True)
    wait_until(lambda: all_stored(real_redis), 60, "every pageview stored")  # the store's threads run

    stops_warm_on_a_sigterm_another_thread_takes(worker, writer if role == "writer" else enrichers[0])

    assert_stored_exactly_once(real_redis, worker, store, sent)


def test_a_sigterm_another_thread_takes_while_an_enricher_waits_for_a_stopped_writer_stops_it_warm(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=5, processes=2)
    writer, enrichers = wait_for_roles(real_redis, worker, 2)
    with stopped(writer):
        sent = send(real_redis, 100, at_once=True)
        # The writer's stream is full: each enricher holds a batch it waits to hand over, and
        # its main thread waits for that hand-over (workers.batch.loop's write-behind). The
        # stream's own length is what the enrichers wait on (PassToWriter.deliver), not the
        # backlog's count of handed batches: an enricher starved past its 2 s lease hands over
        # a batch the other one re-claimed too, two entries for one batch (seen under a
        # clean-clone run: 7 batches counted, 8 entries, both enrichers waiting).
        wait_until(
            lambda: (
                real_redis.xlen(keys.ENRICHED_STREAM) >= ENRICHED_MAX_WAITING
                and real_redis.zcard(LANE_KEYS[Lane.LIVE].leases) >= 2
            ),
            30,
            "both enrichers waiting to hand a batch to the stopped writer",
            explain=lambda: (
                f"{real_redis.xlen(keys.ENRICHED_STREAM)} entries for the writer, {queue_backlog(real_redis)}, "
                f"leases {real_redis.zcard(LANE_KEYS[Lane.LIVE].leases)}"
            ),
        )

        stops_warm_on_a_sigterm_another_thread_takes(worker, enrichers[0])
    assert_stored_exactly_once(real_redis, worker, store, sent)


def writer_figures(redis_url: str) -> tuple[dict[str, Any], dict[str, float]]:
    """What ``hitstream queue --json`` and the API's /metrics show of the batches waiting for
    the store writer."""
    result = CliRunner().invoke(cli, ["queue", "--json", "--rate-interval", "0"])
    assert result.exit_code == 0, result.output
    with client_for(redis_url) as api:
        text = api.get("/metrics").text
    samples = {
        sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples
    }
    return orjson.loads(result.stdout)["enriched"], {
        name: samples[f"hitstream_enriched_{name}"] for name in ("batches", "pageviews")
    }


def test_queue_and_metrics_show_what_a_stopped_writer_has_not_stored_and_nothing_once_it_has(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, hitstream_env: dict[str, str], redis_url: str
) -> None:
    store = tmp_path / "store"
    worker = processes.worker(store, batch_size=5, processes=2)
    writer, _ = wait_for_roles(real_redis, worker, 2)

    with stopped(writer):
        sent = send(real_redis, 15, at_once=True)
        wait_until(
            lambda: queue_backlog(real_redis).enriched.batches == 3, 30, "three batches handed to the stopped writer"
        )
        wait_for_redis_clock(real_redis, redis_clock_ms(real_redis) + 200)  # the oldest waited 0.2 s
        enriched, metrics = writer_figures(redis_url)

    assert (enriched["batches"], enriched["pageviews"]) == (3, 15)
    assert 0.2 <= enriched["oldest_age_seconds"] < 60
    assert metrics == {"batches": 3.0, "pageviews": 15.0}
    assert_stored_exactly_once(real_redis, worker, store, sent)
    enriched, metrics = writer_figures(redis_url)
    assert enriched == {"batches": 0, "pageviews": 0, "oldest_age_seconds": None}
    assert metrics == {"batches": 0.0, "pageviews": 0.0}
