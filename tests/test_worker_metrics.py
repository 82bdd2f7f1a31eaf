"""Worker metrics: one ``hitstream worker -n 3`` on a ClickHouse server (the HTTP fixture), its
host endpoint scraped, and every count matching what was sent: envelopes per lane, rows
stored, drops by reason, dead letters by step, batches, latencies, store retries during an
outage, live processes (also after one is killed). No IP, token, site, URL or batch id in
any label."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from shared import keys
from shared.config import ConfigError, load_settings
from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, add_exclusion
from shared.envelope import Envelope
from shared.lanes import LANE_KEYS, Lane
from tests.clickhouse_http import ClickHouseHttp
from tests.ports import free_port
from tests.procs import ARTIFACTS, HITSTREAM, Commands, Processes, drained, wait_until
from tests.traffic import queued_envelope
from workers.records import DropReason

SITE = str(uuid.uuid4())
IP = "198.51.100.77"
TOKEN_ID = "token-for-metrics-test"
LABELS = {"lane", "reason", "step", "purpose", "verdict", "le"}  # every label a worker metric may carry


def envelope(path: str) -> Envelope:
    return queued_envelope(SITE, f"https://metrics.example{path}", IP, site_domain="metrics.example")


def send(client: redis.Redis, lane: Lane, paths: list[str], poison: int = 0) -> None:
    """``paths`` as envelopes, then ``poison`` envelopes whose URL breaks the url step."""
    stream = LANE_KEYS[lane].stream
    with client.pipeline(transaction=False) as pipe:
        for path in paths:
            pipe.xadd(stream, {keys.ENVELOPE_FIELD: envelope(path).to_json(), keys.TOKEN_FIELD: TOKEN_ID})
        for _ in range(poison):
            broken = envelope("x").to_json().replace(b"https://metrics.examplex", b"http://[::1/x")
            pipe.xadd(stream, {keys.ENVELOPE_FIELD: broken, keys.TOKEN_FIELD: TOKEN_ID})
        pipe.hincrby(LANE_KEYS[lane].queued_by_token, TOKEN_ID, len(paths) + poison)
        pipe.execute()


class WorkerHost:
    """``hitstream worker -n N`` with its metrics endpoint on a free port."""

    def __init__(self, env: dict[str, str], dsn: str, processes: int, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {
            **env,
            "HITSTREAM_CLICKHOUSE_URL": dsn,
            "HITSTREAM_BATCH_SIZE": "10",
            # Long enough that no lease expires on a loaded machine: a re-claimed batch is processed
            # (and counted) twice, though stored once.
            "HITSTREAM_CLAIM_TIMEOUT": "60",
            "HITSTREAM_WORKER_METRICS_PORT": str(self.port),
        }
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [HITSTREAM, "worker", "-n", str(processes)], env=env, stdout=log, stderr=log
            )

    def scrape(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.scrape()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample's value (0 when absent), summed over labels not given."""
        return sum(
            value
            for (sample, sample_labels), value in self.samples().items()
            if sample == name and set(labels.items()) <= sample_labels and "le" not in dict(sample_labels)
        )

    def answering(self) -> bool:
        """Our endpoint answers (not another program that took the free port first: then the
        worker exits, naming the port)."""
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            return "hitstream_worker_processes" in self.scrape()
        except httpx.TransportError:
            return False

    def children(self) -> list[psutil.Process]:
        """The worker processes (not multiprocessing's resource tracker)."""
        children = psutil.Process(self.process.pid).children()
        return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


@pytest.fixture
def worker_host(hitstream_env: dict[str, str], clickhouse_http: ClickHouseHttp, tmp_path: Path) -> Iterator[WorkerHost]:
    migrated = subprocess.run(
        [HITSTREAM, "migrate"],
        env={**hitstream_env, "HITSTREAM_CLICKHOUSE_URL": clickhouse_http.dsn()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    log_path = tmp_path / "worker-host.log"
    ARTIFACTS.logs.append(log_path)
    host = WorkerHost(hitstream_env, clickhouse_http.dsn(send_receive_timeout=2), 3, log_path)
    try:
        wait_until(host.answering, 30, "the worker metrics endpoint")
        wait_until(lambda: host.value("hitstream_worker_processes") == 3, 60, "3 live worker processes")
        yield host
    finally:
        if host.process.poll() is None:
            host.process.send_signal(signal.SIGTERM)
            try:
                host.process.wait(30)
            except subprocess.TimeoutExpired:
                for child in host.children():
                    child.kill()
                host.process.kill()
                host.process.wait()


@pytest.fixture
def private_paths_excluded(real_redis: redis.Redis) -> None:
    """An instance-wide exclusion of /private, in place before the worker processes start (a
    test requests it ahead of ``worker_host``), so each one loads it with its pipeline."""
    add_exclusion(real_redis, INSTANCE_SCOPE, ExclusionKind.PATH, "/private")


def test_three_worker_processes_report_exactly_what_was_sent(
    private_paths_excluded: None, worker_host: WorkerHost, real_redis: redis.Redis
) -> None:
    send(real_redis, Lane.LIVE, [f"/live/{n}" for n in range(400)] + ["/private"] * 30, poison=4)
    send(real_redis, Lane.BULK, [f"/bulk/{n}" for n in range(150)] + ["/private/x"] * 10, poison=1)
    wait_until(lambda: drained(real_redis), 120, "the queue to drain")

    value = worker_host.value
    wait_until(lambda: value("hitstream_worker_envelopes_total") == 595, 10, "the last batch's counts")
    assert value("hitstream_worker_envelopes_total", lane="live") == 434
    assert value("hitstream_worker_envelopes_total", lane="bulk") == 161
    assert value("hitstream_worker_rows_stored_total", lane="live") == 400
    assert value("hitstream_worker_rows_stored_total", lane="bulk") == 150
    assert value("hitstream_worker_drops_total", reason="instance_path") == 40
    assert value("hitstream_worker_drops_total") == 40
    assert value("hitstream_worker_dead_letters_total", step="url") == 5
    assert value("hitstream_worker_dead_letters_total") == 5
    assert value("hitstream_worker_store_retries_total") == 0
    batches = value("hitstream_worker_batch_envelopes_count")
    assert batches >= 60  # batches of at most 10
    assert value("hitstream_worker_batch_envelopes_sum") == 595
    assert value("hitstream_worker_claim_to_store_seconds_count") == batches
    assert value("hitstream_worker_queue_to_store_seconds_count") == batches
    assert value("hitstream_worker_insert_seconds_count") >= batches  # one insert per table and month, at least
    assert value("hitstream_worker_processes") == 3

    # Every drop reason is a series from the start (at 0), so rate() sees the first drop.
    reasons = {
        dict(labels).get("reason") for name, labels in worker_host.samples() if name == "hitstream_worker_drops_total"
    }
    assert reasons == {reason.value for reason in DropReason}

    text = worker_host.scrape()
    for secret in (IP, TOKEN_ID, SITE, "metrics.example", "http", "b:", "bulk:"):
        assert secret not in text
    for _, labels in worker_host.samples():
        assert {name for name, _ in labels} <= LABELS


def test_a_killed_worker_process_stops_counting_as_live_and_its_counts_stay(
    worker_host: WorkerHost, real_redis: redis.Redis
) -> None:
    send(real_redis, Lane.LIVE, [f"/before/{n}" for n in range(50)])
    wait_until(lambda: drained(real_redis), 60, "the queue to drain")
    wait_until(lambda: worker_host.value("hitstream_worker_envelopes_total") == 50, 10, "the counts")
    assert len(worker_host.children()) == 3
    worker_host.children()[0].send_signal(signal.SIGKILL)
    wait_until(lambda: worker_host.value("hitstream_worker_processes") == 2, 10, "2 live worker processes")
    send(real_redis, Lane.LIVE, [f"/after/{n}" for n in range(20)])
    wait_until(lambda: drained(real_redis), 60, "the queue to drain")
    wait_until(lambda: worker_host.value("hitstream_worker_envelopes_total") >= 70, 10, "the counts")
    # The killed process's counts stay in the host's totals; nothing is counted twice.
    assert worker_host.value("hitstream_worker_rows_stored_total") == 70


def test_store_retries_are_counted_during_an_outage(
    worker_host: WorkerHost, real_redis: redis.Redis, clickhouse_http: ClickHouseHttp
) -> None:
    clickhouse_http.begin_outage("unavailable")
    send(real_redis, Lane.LIVE, [f"/outage/{n}" for n in range(30)])
    wait_until(lambda: worker_host.value("hitstream_worker_store_retries_total") >= 3, 30, "retries to be counted")
    clickhouse_http.end_outage("unavailable")
    wait_until(lambda: drained(real_redis), 60, "the queue to drain")
    wait_until(lambda: worker_host.value("hitstream_worker_rows_stored_total") == 30, 10, "the counts")
    assert worker_host.value("hitstream_worker_envelopes_total") == 30


def test_a_metrics_port_in_use_stops_the_worker_with_one_line_naming_it(
    commands: Commands, hitstream_env: dict[str, str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refusal = worker_start_refusal(commands, {**hitstream_env, "HITSTREAM_WORKER_METRICS_PORT": str(port)})
    assert refusal == [
        f"Error: cannot serve worker metrics on 127.0.0.1:{port} (HITSTREAM_WORKER_METRICS_HOST, "
        "HITSTREAM_WORKER_METRICS_PORT): [Errno 98] Address already in use"
    ]


def test_a_metrics_address_this_host_does_not_have_stops_the_worker_with_one_line_naming_it(
    commands: Commands, hitstream_env: dict[str, str]
) -> None:
    port = free_port()
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this machine.
    address = {"HITSTREAM_WORKER_METRICS_PORT": str(port), "HITSTREAM_WORKER_METRICS_HOST": "192.0.2.1"}
    assert worker_start_refusal(commands, {**hitstream_env, **address}) == [
        f"Error: cannot serve worker metrics on 192.0.2.1:{port} (HITSTREAM_WORKER_METRICS_HOST, "
        "HITSTREAM_WORKER_METRICS_PORT): [Errno 99] Cannot assign requested address"
    ]


def worker_start_refusal(commands: Commands, env: dict[str, str]) -> list[str]:
    """The lines ``hitstream worker`` printed when it refused to start (exit status 1)."""
    result = commands.run([HITSTREAM, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    return result.stderr.strip().splitlines()


def listening_addresses(pid: int, port: int) -> set[str]:
    """The addresses process ``pid`` listens on at ``port``."""
    return {
        connection.laddr.ip
        for connection in psutil.Process(pid).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


def resolved(host: str) -> set[str]:
    return {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}


@pytest.mark.parametrize(
    ("host", "listening"),
    [(None, {"127.0.0.1"}), ("0.0.0.0", {"0.0.0.0"}), ("::1", {"::1"}), ("localhost", resolved("localhost"))],
    ids=["unset", "all IPv4 interfaces", "IPv6 loopback", "a host name"],
)
def test_the_worker_serves_its_metrics_on_loopback_unless_another_address_is_set(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, host: str | None, listening: set[str]
) -> None:
    port = free_port()
    settings = {"HITSTREAM_WORKER_METRICS_PORT": str(port)}
    if host is not None:
        settings["HITSTREAM_WORKER_METRICS_HOST"] = host
    worker = processes.worker(tmp_path / "store", **settings)
    worker.wait_ready(real_redis)
    addresses = listening_addresses(worker.pid, port)
    assert len(addresses) == 1 and addresses <= listening
    (address,) = addresses
    scraped = "127.0.0.1" if address == "0.0.0.0" else address
    url = f"http://{'[' + scraped + ']' if ':' in scraped else scraped}:{port}/metrics"
    assert "hitstream_worker_processes 1.0" in httpx.get(url, timeout=5).text
    assert worker.stop() == 0


@pytest.mark.parametrize("value", ["0", "65536", "-1", "metrics", "9108.5"])
def test_a_bad_metrics_port_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=f"HITSTREAM_WORKER_METRICS_PORT={value!r} is invalid"):
        load_settings({"HITSTREAM_WORKER_METRICS_PORT": value})


def test_the_metrics_port_is_off_unless_set() -> None:
    assert load_settings({}).worker_metrics_port is None
    assert load_settings({"HITSTREAM_WORKER_METRICS_PORT": "9108"}).worker_metrics_port == 9108


@pytest.mark.parametrize(
    "value",
    [
        "not a host",
        "metrics.example:9108",
        "http://0.0.0.0",
        "-metrics.example",
        "metrics-.example",
        "metrics..example",
        "256.1.1.1",
        "10.0.0",
        "::1::",
        "[::1]",
        "a" * 64 + ".example",
        "metrics_host.example",
    ],
)
def test_a_bad_metrics_host_names_the_variable(value: str) -> None:
    with pytest.raises(
        ConfigError, match=re.escape(f"HITSTREAM_WORKER_METRICS_HOST={value!r} is invalid: must be an IP")
    ):
        load_settings({"HITSTREAM_WORKER_METRICS_HOST": value})


@pytest.mark.parametrize(
    "value", ["127.0.0.1", "0.0.0.0", "::", "::1", "fe80::1%eth0", "localhost", "worker-1.example."]
)
def test_the_metrics_host_takes_an_ip_address_or_a_host_name(value: str) -> None:
    assert load_settings({"HITSTREAM_WORKER_METRICS_HOST": value}).worker_metrics_host == value


def test_the_metrics_host_is_loopback_unless_set() -> None:
    assert load_settings({}).worker_metrics_host == "127.0.0.1"
