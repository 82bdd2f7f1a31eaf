"""Power cuts, with Redis's AOF and the chdb store on LazyFS (tests/lazyfs.py): whatever was
not fsynced when the power went is gone. Real ``hitstream api``, ``worker``, ``replay`` and
``migrate`` processes; in the durable mode (fsync: Redis ``appendfsync always``) every
pageview answered 202 must be stored exactly once after the machine comes back, counted by
page_id in the store.

A cut kills every process (SIGKILL: Redis first, so nothing it had not written survives a
later step), then drops every unsynced write on both disks (``power_cut``), unmounts and
mounts them again, restarts Redis on the same AOF and starts a worker, which drains the
lanes. Killing before cutting is the power cut itself: a dead process's writes sit in the
(LazyFS) page cache exactly as a running one's, and nothing can write after the cut.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from hitstream.redis_server import RedisServer
from ingest_api.openapi import BATCH_PATH
from shared import keys
from shared.durability import DURABILITY_VARIABLE, Durability
from shared.lanes import LANE_KEYS, Lane
from tests.lazyfs import LazyFS
from tests.ports import free_port
from tests.procs import ARTIFACTS, HITSTREAM, Api, Processes, Worker, stored_pages, wait_until
from tests.test_lanes_processes import replay_file
from tests.test_worker_scale_out import all_stored, wait_for_roles
from tests.traffic import ingest_token, pageview

pytestmark = pytest.mark.faults

PAGEVIEWS = 3_000  # the figure
PER_REQUEST = 100
DRAINED_SECONDS = 120.0


class Machine:
    """One machine whose power can be cut: Redis (AOF) and the chdb store each on a LazyFS
    disk, and the hitstream processes running on them, in one durability mode."""

    def __init__(
        self,
        redis_disk: LazyFS,
        store_disk: LazyFS,
        processes: Processes,
        log_dir: Path,
        durability: Durability = Durability.FSYNC,
    ) -> None:
        self.redis_disk = redis_disk
        self.store_disk = store_disk
        self.processes = processes
        self.replays: list[subprocess.Popen[bytes]] = []
        # The Redis the mode asks for (relaxed: a write fsynced within a second or two); its
        # log off the LazyFS disk, so that a cut cannot take it.
        self.redis = RedisServer(
            free_port(),
            redis_disk.mount_dir,
            extra=("--logfile", str(log_dir / "redis.log")),
            appendfsync="always" if durability.needs_fsync else "everysec",
        )
        self.redis.start()
        self.client = redis.Redis.from_url(self.redis.url)
        self.store = store_disk.mount_dir / "chdb"
        ARTIFACTS.add_store(store_disk.root_dir / "chdb")  # where the privacy scan finds it once unmounted
        self.settings = {"HITSTREAM_REDIS_URL": self.redis.url, DURABILITY_VARIABLE: durability.value}

    def api(self) -> Api:
        return self.processes.api(**self.settings)

    def worker(self, processes: int = 1) -> Worker:
        return self.processes.worker(self.store, batch_size=PER_REQUEST, processes=processes, **self.settings)

    def replay(self, file: Path, api: Api, secret: str) -> subprocess.Popen[bytes]:
        """``hitstream replay`` of ``file`` through the bulk lane, 100 lines per request, two
        in flight (slow enough to be cut half-way). Its journal is next to the file, off
        LazyFS, as on the operator's machine; a cut stops it, and the same command resumes."""
        command = [HITSTREAM, "replay", str(file), "--url", api.url, "--quiet", "--endpoint", "batch"]
        replay = subprocess.Popen(
            [*command, "--concurrency", "2", "--batch-size", str(PER_REQUEST)],
            env={**self.processes.env, "HITSTREAM_TOKEN": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.replays.append(replay)
        return replay

    def power_cut(self) -> None:
        """Cut the power, then bring the machine back with Redis running on what its disk kept."""
        self.redis.kill()
        self._kill_processes()
        for disk in (self.redis_disk, self.store_disk):
            if not disk.cut_happened():  # (else a cut armed with cut_after came already)
                disk.power_cut()
            disk.unmount()
            disk.mount()
        self.client.close()
        self.redis.start()
        self.client = redis.Redis.from_url(self.redis.url)

    def stored_after_restart(self, processes: int = 1) -> Counter[str]:
        """Start a worker, wait until it stored everything the lanes (and the writer's
        stream) hold, stop it, and return the stored page_ids."""
        worker = self.worker(processes)
        if processes == 1:
            worker.wait_ready(self.client)
        else:
            wait_for_roles(self.client, worker, processes)
        wait_until(lambda: all_stored(self.client), DRAINED_SECONDS, "the lanes to drain", interval=0.1)
        assert worker.stop(60) == 0, worker.output()
        return stored_pages(self.store)[0]

    def shut_down(self) -> None:
        self._kill_processes()
        self.redis.kill()
        self.client.close()

    def _kill_processes(self) -> None:
        self.processes.kill_all()
        for replay in self.replays:
            replay.kill()
            replay.wait()


@pytest.fixture
def machine(lazyfs: Callable[[str], LazyFS], processes: Processes, tmp_path: Path) -> Iterator[Machine]:
    started = Machine(lazyfs("redis"), lazyfs("store"), processes, tmp_path)
    yield started
    started.shut_down()  # before the disks are unmounted


def post_batches(api: Api, secret: str, count: int, concurrency: int = 4) -> list[str]:
    """``count`` new pageviews through the batch endpoint, ``PER_REQUEST`` per request;
    returns the page_ids accepted (each request must be answered 202, every item accepted)."""
    pages = [pageview(number) for number in range(count)]
    requests = [pages[start : start + PER_REQUEST] for start in range(0, count, PER_REQUEST)]

    async def send() -> list[httpx.Response]:
        limit = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:

            async def one(items: list[tuple[str, bytes]]) -> httpx.Response:
                async with limit:
                    return await client.post(BATCH_PATH, content=b"[" + b",".join(body for _, body in items) + b"]")

            return await asyncio.gather(*(one(items) for items in requests))

    answers = asyncio.run(send())
    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (202, {"accepted": len(items), "rejected": []}) for items in requests
    ]
    return [page_id for page_id, _ in pages]


def lane_added(client: redis.Redis, lane: Lane) -> int:
    """Entries ever queued in ``lane``."""
    stream = LANE_KEYS[lane].stream
    return int(client.xinfo_stream(stream)["entries-added"]) if client.exists(stream) else 0


def lane_acknowledged(client: redis.Redis, lane: Lane) -> int:
    """Entries of ``lane`` acknowledged so far (stored first, then acknowledged and deleted)."""
    return lane_added(client, lane) - client.xlen(LANE_KEYS[lane].stream)


def assert_stored_exactly_once(stored: Counter[str], accepted: list[str]) -> None:
    """Counter(stored) == Counter(accepted) (page_ids are unique), said as figures."""
    expected = Counter(accepted)
    figures = {
        "stored": sum(stored.values()),
        "lost": sum((expected - stored).values()),
        "duplicated": sum(count - 1 for page, count in stored.items() if page in expected),
        "never accepted": sum(count for page, count in stored.items() if page not in expected),
    }
    print(f"\nFIGURES {len(accepted)} accepted: {figures}")
    assert figures == {"stored": len(accepted), "lost": 0, "duplicated": 0, "never accepted": 0}


def test_a_cut_right_after_the_last_202_loses_and_doubles_nothing(machine: Machine) -> None:
    secret = ingest_token(machine.client)
    api = machine.api()
    machine.worker().wait_ready(machine.client)

    accepted = post_batches(api, secret, PAGEVIEWS)
    machine.power_cut()

    assert_stored_exactly_once(machine.stored_after_restart(), accepted)


def test_a_cut_right_after_the_last_acknowledgement_loses_and_doubles_nothing(machine: Machine) -> None:
    secret = ingest_token(machine.client)
    api = machine.api()
    machine.worker().wait_ready(machine.client)
    accepted = post_batches(api, secret, PAGEVIEWS)
    wait_until(lambda: all_stored(machine.client), DRAINED_SECONDS, "every batch stored and acknowledged")

    machine.power_cut()

    assert_stored_exactly_once(machine.stored_after_restart(), accepted)


def test_a_cut_in_the_middle_of_a_bulk_replay_loses_and_doubles_nothing_once_the_replay_resumes(
    machine: Machine, tmp_path: Path
) -> None:
    secret = ingest_token(machine.client, bulk=True)
    lines = replay_file(tmp_path / "history.ndjson", 0, PAGEVIEWS)
    api = machine.api()
    machine.worker()
    first = machine.replay(tmp_path / "history.ndjson", api, secret)

    # Some of the replay stored and acknowledged, the replay frozen well before its end: the
    # store holds some but not all of it when the power goes.
    wait_until(lambda: lane_added(machine.client, Lane.BULK) >= PAGEVIEWS // 3, 60, "a third replayed")
    first.send_signal(signal.SIGSTOP)
    wait_until(lambda: lane_acknowledged(machine.client, Lane.BULK) > 0, 60, "some of the replay stored")
    assert lane_added(machine.client, Lane.BULK) < PAGEVIEWS
    machine.power_cut()

    api = machine.api()
    resumed = machine.replay(tmp_path / "history.ndjson", api, secret)
    output = resumed.communicate(timeout=120)[0].decode()
    assert resumed.returncode == 0, output
    assert_stored_exactly_once(machine.stored_after_restart(), lines)


def test_a_cut_while_the_writer_of_worker_n_2_holds_batches_loses_and_doubles_nothing(machine: Machine) -> None:
    secret = ingest_token(machine.client)
    api = machine.api()
    worker = machine.worker(processes=2)
    writer, _ = wait_for_roles(machine.client, worker, 2)
    first = post_batches(api, secret, PAGEVIEWS // 2)
    wait_until(lambda: lane_acknowledged(machine.client, Lane.LIVE) > 0, 60, "some batches stored")

    os.kill(writer, signal.SIGSTOP)  # enriched batches pile up for it
    second = post_batches(api, secret, PAGEVIEWS // 2)
    wait_until(lambda: machine.client.xlen(keys.ENRICHED_STREAM) > 0, 60, "batches handed to the frozen writer")
    machine.power_cut()

    assert_stored_exactly_once(machine.stored_after_restart(processes=2), first + second)


def test_a_cut_right_after_a_batch_part_is_renamed_into_place_doubles_nothing(machine: Machine) -> None:
    """The moment between an insert and its batch's acknowledgement, exactly: LazyFS cuts
    the store's power right after ClickHouse renames the next inserted part into place
    (Redis's disk is cut as soon as that is seen; nothing is acknowledged in between, since
    the store's calls fail). The batch is re-claimed under the same id; its rows must be
    stored once."""
    secret = ingest_token(machine.client)
    api = machine.api()
    machine.worker().wait_ready(machine.client)
    first = post_batches(api, secret, PAGEVIEWS // 2)
    wait_until(lambda: lane_acknowledged(machine.client, Lane.LIVE) > 0, 60, "some batches stored")

    machine.store_disk.cut_after("rename", "tmp_insert_")
    second = post_batches(api, secret, PAGEVIEWS // 2)
    wait_until(machine.store_disk.cut_happened, 60, "the cut after a part's rename", interval=0.001)
    machine.power_cut()

    assert_stored_exactly_once(machine.stored_after_restart(), first + second)


def test_right_after_migrate_a_cut_leaves_a_store_that_opens_with_its_schema_and_ingests(machine: Machine) -> None:
    def migrate() -> str:
        result = subprocess.run(
            [HITSTREAM, "migrate"],
            env={**machine.processes.env, "HITSTREAM_CLICKHOUSE_URL": f"chdb://{machine.store}"},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "applied 0001_create_pageviews" in migrate()
    machine.power_cut()

    assert migrate().splitlines() == ["schema is up to date"]
    secret = ingest_token(machine.client)
    api = machine.api()
    accepted = post_batches(api, secret, 300)
    assert_stored_exactly_once(machine.stored_after_restart(), accepted)
