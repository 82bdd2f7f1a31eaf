"""Acceptance of the lanes with real processes (``hitstream api``, ``hitstream worker`` and
``hitstream replay``): a replay flooding the bulk lane to its cap neither refuses nor delays
live traffic, two replays of different tokens progress side by side with room for a third,
a live token cannot replay, and every pageview is stored exactly once in the end."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from ingest_api.intake import LIVE_TOKEN_IN_BULK, TOKEN_SHARE_FULL
from shared.control.tokens import token_key
from shared.lanes import LANE_KEYS, Lane
from tests.procs import HITSTREAM, Processes, stored_pages, wait_until
from tests.traffic import ingest_token, pageview

# Big enough that the worker, at ~20k pageviews/s, is still draining the flood while the live
# pageviews are measured (with 10,000 it once emptied the lane first).
BULK_CAP = 40_000
# Generous for a loaded 2-core machine (the issue asks for "a few seconds").
LIVE_STORED_WITHIN_SECONDS = 5.0
LIVE_MEASURED = 20


def replay_file(path: Path, first: int, lines: int) -> list[str]:
    """NDJSON pageviews, each with its own page_id; returns the page_ids."""
    pages = [pageview(number) for number in range(first, first + lines)]
    path.write_bytes(b"\n".join(body for _, body in pages) + b"\n")
    return [page_id for page_id, _ in pages]


def accepted_lines(path: Path) -> int:
    """What a running replay has recorded as accepted so far (its state file, saved every 0.2 s)."""
    state = path.with_name(f"{path.name}.state.json")
    return orjson.loads(state.read_bytes())["tally"]["accepted"] if state.exists() else 0


class Replays:
    """``hitstream replay`` processes of one test; any still running at its end are killed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen[str]] = []

    def start(self, path: Path, url: str, secret: str) -> subprocess.Popen[str]:
        command = [HITSTREAM, "replay", str(path), "--url", url, "--quiet", "--endpoint", "batch", "--concurrency", "8"]
        replay = subprocess.Popen(
            command,
            env={**self.env, "HITSTREAM_TOKEN": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(replay)
        return replay

    def kill_all(self) -> None:
        for replay in self.started:
            replay.kill()
            replay.communicate()


@pytest.fixture
def replays(hitstream_env: dict[str, str]) -> Iterator[Replays]:
    started = Replays(hitstream_env)
    yield started
    started.kill_all()


def finished(replay: subprocess.Popen[str], timeout: float = 180) -> str:
    stdout, stderr = replay.communicate(timeout=timeout)
    assert replay.returncode == 0, stderr
    return stdout


@dataclass
class LiveClient:
    """Posts one live pageview every ``interval`` seconds from a thread, noting each answer
    and when its 202 arrived (wall clock, ms)."""

    url: str
    secret: str
    interval: float = 0.1
    answers: dict[str, int] = field(default_factory=dict)
    accepted_at_ms: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            number = 1_000_000
            while not self.stop.wait(self.interval):
                page_id, body = pageview(number)
                number += 1
                status = client.post("/api/ingest/server/pageview", content=body).status_code
                self.answers[page_id] = status
                if status == 202:
                    self.accepted_at_ms[page_id] = time.time_ns() // 1_000_000

    def accepted_since(self, since_ms: int) -> int:
        return sum(stamp >= since_ms for stamp in list(self.accepted_at_ms.values()))

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(30)


@dataclass
class LiveStoredSampler:
    """Every ~20 ms, the live stream's first entry and the bulk lane's depth. Entries are
    deleted only after their insert, so a live pageview accepted at t is stored by the first
    sample whose live stream holds no entry added at or before t."""

    client: redis.Redis
    samples: list[tuple[int, int | None, int]] = field(default_factory=list)  # (ms, first entry ms, bulk depth)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self._sample()

    def _sample(self) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            first, bulk_depth = (
                pipe.xrange(LANE_KEYS[Lane.LIVE].stream, count=1).xlen(LANE_KEYS[Lane.BULK].stream).execute()
            )
        sampled_ms = time.time_ns() // 1_000_000
        self.samples.append((sampled_ms, int(first[0][0].split(b"-")[0]) if first else None, bulk_depth))

    def finish(self) -> None:
        """Stops sampling after one last sample: the drain the caller waited for may have
        happened after the thread's latest sample (CI once lost that race by a few ms)."""
        if not self.stop.is_set():
            self.stop.set()
            self._thread.join(10)
            self._sample()

    def stored(self, accepted_ms: int) -> tuple[float, int]:
        """Seconds from the 202 until the pageview was seen stored, and the bulk depth then."""
        for sampled_ms, first_ms, bulk_depth in self.samples:
            if sampled_ms >= accepted_ms and (first_ms is None or first_ms > accepted_ms):
                return (sampled_ms - accepted_ms) / 1000, bulk_depth
        raise AssertionError(f"the pageview accepted at {accepted_ms} was never seen stored")


def test_a_replay_flooding_the_bulk_lane_to_its_cap_neither_refuses_nor_delays_live_traffic(
    processes: Processes, replays: Replays, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api(HITSTREAM_BULK_QUEUE_MAX_DEPTH=str(BULK_CAP), HITSTREAM_TOKEN_QUEUE_SHARE="1")
    live_secret, bulk_secret = ingest_token(real_redis), ingest_token(real_redis, bulk=True)
    replayed = replay_file(tmp_path / "history.ndjson", 0, 3 * BULK_CAP)
    bulk_stream = LANE_KEYS[Lane.BULK].stream

    replay = replays.start(tmp_path / "history.ndjson", api.url, bulk_secret)
    live = LiveClient(api.url, live_secret, interval=0.05)
    sampler = LiveStoredSampler(real_redis)
    try:
        # No worker yet: the flood fills the bulk lane to its cap, and the replay sees 503s.
        wait_until(lambda: real_redis.xlen(bulk_stream) == BULK_CAP, 60, "the bulk lane to fill to its cap")
        worker = processes.worker(tmp_path / "store")
        worker.wait_ready(real_redis)
        measured_from_ms = time.time_ns() // 1_000_000
        # The live client shares the API with the flood: on a loaded machine its requests take
        # up to a second or two, so it runs until it has enough pageviews to measure.
        wait_until(lambda: live.accepted_since(measured_from_ms) >= LIVE_MEASURED, 90, "live pageviews to measure")
        live.finish()
        wait_until(lambda: real_redis.xlen(LANE_KEYS[Lane.LIVE].stream) == 0, 30, "the live lane to drain")
    finally:
        live.finish()  # the client and the sampler never outlive the test
        sampler.finish()
    summary = finished(replay)
    wait_until(lambda: real_redis.xlen(bulk_stream) == 0, 120, "the bulk backlog to drain")
    assert worker.stop() == 0

    assert set(live.answers.values()) == {202}, Counter(live.answers.values())
    assert "retried requests" in summary and "503" in summary  # the flood did hit its cap
    measured = [stamp for stamp in live.accepted_at_ms.values() if stamp >= measured_from_ms]
    stored = [sampler.stored(stamp) for stamp in measured]
    slowest = max(seconds for seconds, _ in stored)
    assert slowest <= LIVE_STORED_WITHIN_SECONDS, f"a live pageview took {slowest:.1f} s to be stored"
    assert stored[-1][1] > 0, "the bulk backlog had drained before the last live pageview was stored"
    pages, _ = stored_pages(tmp_path / "store")
    assert pages == Counter(replayed) + Counter(live.answers.keys())  # everything, exactly once
    assert real_redis.hlen(LANE_KEYS[Lane.BULK].queued_by_token) == 0


def test_two_replays_of_different_tokens_progress_side_by_side_and_a_third_still_gets_in(
    processes: Processes, replays: Replays, real_redis: redis.Redis, tmp_path: Path
) -> None:
    # A share of 0.4 of 6000: 2400 entries per token, so two floods leave room for a third.
    api = processes.api(HITSTREAM_BULK_QUEUE_MAX_DEPTH="6000", HITSTREAM_TOKEN_QUEUE_SHARE="0.4")
    secrets = [ingest_token(real_redis, bulk=True) for _ in range(3)]
    token_ids = [real_redis.hget(token_key(secret), "id").decode() for secret in secrets]
    files = [tmp_path / f"customer-{n}.ndjson" for n in range(2)]
    replayed = [replay_file(path, n * 100_000, 15_000) for n, path in enumerate(files)]
    counts = LANE_KEYS[Lane.BULK].queued_by_token
    worker = processes.worker(tmp_path / "store")
    worker.wait_ready(real_redis)

    floods = [replays.start(path, api.url, secret) for path, secret in zip(files, secrets, strict=False)]
    samples: list[dict[str, int]] = []
    third_answers: list[httpx.Response] = []
    third_id, third_body = pageview(999_999)
    accepted_when_first_finished: list[int] | None = None
    while any(flood.poll() is None for flood in floods):
        queued = {token.decode(): int(count) for token, count in real_redis.hgetall(counts).items()}
        samples.append(queued)
        if accepted_when_first_finished is None and any(flood.poll() is not None for flood in floods):
            accepted_when_first_finished = [accepted_lines(path) for path in files]
        third_in = bool(third_answers) and third_answers[-1].status_code == 202
        if not third_in and all(queued.get(token, 0) >= 2000 for token in token_ids[:2]):
            third_answers.append(
                httpx.post(
                    f"{api.url}/api/ingest/server/pageviews",
                    content=b"[" + third_body + b"]",
                    headers={"Authorization": f"Bearer {secrets[2]}", "Content-Type": "application/json"},
                    timeout=10,
                )
            )
        time.sleep(0.05)
    summaries = [finished(flood) for flood in floods]
    wait_until(lambda: real_redis.xlen(LANE_KEYS[Lane.BULK].stream) == 0, 120, "the bulk lane to drain")
    assert worker.stop() == 0

    assert all(count <= 2400 for sample in samples for count in sample.values())  # the shares held
    # Side by side: both tokens held most of their share at the same moment, and the slower
    # replay had come a long way when the faster one finished. Its pace is also its own
    # process's: beside another test's processes on two cores it had 6,500 of 15,000.
    assert any(all(sample.get(token, 0) >= 2000 for token in token_ids[:2]) for sample in samples)
    assert accepted_when_first_finished is not None
    assert min(accepted_when_first_finished) >= 15_000 // 4, accepted_when_first_finished
    assert any("503" in summary for summary in summaries)  # the shares did refuse
    # A plain 503 (Redis slower than the API's timeout on a loaded machine) may come first and
    # is retried, as any client does; the lane and the shares never refused the third token.
    assert third_answers and third_answers[-1].status_code == 202, [answer.text for answer in third_answers]
    assert all(answer.json() != {"message": TOKEN_SHARE_FULL} for answer in third_answers)
    pages, _ = stored_pages(tmp_path / "store")
    assert pages == Counter(replayed[0]) + Counter(replayed[1]) + Counter([third_id])


def test_a_replay_with_a_live_token_stops_at_once_with_a_clear_message(
    processes: Processes, replays: Replays, real_redis: redis.Redis, tmp_path: Path
) -> None:
    api = processes.api()
    replay_file(tmp_path / "history.ndjson", 0, 2000)

    replay = replays.start(tmp_path / "history.ndjson", api.url, ingest_token(real_redis))
    stdout, stderr = replay.communicate(timeout=60)

    assert replay.returncode == 1
    assert LIVE_TOKEN_IN_BULK in stderr and "tokens create --bulk" in stderr
    assert real_redis.xlen(LANE_KEYS[Lane.LIVE].stream) == real_redis.xlen(LANE_KEYS[Lane.BULK].stream) == 0
    rejects = tmp_path / "history.ndjson.rejects.ndjson"
    assert not rejects.exists() or rejects.read_bytes() == b""  # no line was recorded as rejected
