"""Start-up against an unsafe Redis: real ``redis-server``s configured each way, and every
process kind (``hitstream api``, ``hitstream worker``, the CLI) run against them.

An evicting ``maxmemory-policy`` is refused with one line naming the setting; Redis without
AOF is warned about and shown by ``hitstream queue`` and ``/metrics``; the opt-out variable
lets every process start anyway; a Redis that hides its settings is warned about.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from hitstream.redis_server import RedisServer
from shared import keys
from tests.ports import free_port
from tests.procs import HITSTREAM, Commands, Processes

EVICTING_POLICIES = ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl"]

Configured = Callable[..., RedisServer]


@pytest.fixture
def configured_redis(tmp_path: Path) -> Iterator[Configured]:
    """Start a Redis server of this test's own with extra redis-server arguments."""
    servers: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(port=free_port(), data_dir=tmp_path / f"redis-{len(servers)}", extra=extra)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def run(
    commands: Commands, env: dict[str, str], *arguments: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``hitstream ARGUMENTS`` to its end (for commands that exit by themselves)."""
    return commands.run([HITSTREAM, *arguments], env=env, capture_output=True, text=True, timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess[str], policy: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"maxmemory-policy is {policy}" in lines[0] and "noeviction" in lines[0]
    assert "HITSTREAM_ALLOW_UNSAFE_REDIS=1" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_every_process_kind_refuses_to_start_on_each_evicting_policy(
    commands: Commands, configured_redis: Configured, hitstream_env: dict[str, str], tmp_path: Path
) -> None:
    # Each process kind meets the next policy in turn (every kind and every policy refused
    # at least once): all of them decide through shared.redis_safety, and every kind against
    # every policy started thirty processes and five Redis servers for the same decision.
    server = configured_redis()
    client = redis.Redis.from_url(server.url)
    env = {**hitstream_env, "HITSTREAM_REDIS_URL": server.url}
    kinds = [
        ["api", "--port", str(free_port())],
        ["worker"],
        ["sites", "add", "example.com"],
        ["tokens", "list"],
        ["dead-letters", "list"],
        ["up", "--port", str(free_port()), "--data-dir", str(tmp_path / "up")],
    ]
    for arguments, policy in zip(kinds, itertools.cycle(EVICTING_POLICIES), strict=False):
        client.config_set("maxmemory-policy", policy)
        assert_refused(run(commands, env, *arguments), policy)
    assert client.hlen(keys.SITE_BY_DOMAIN) == 0, "a refused command must change nothing"
    assert not (tmp_path / "chdb").exists(), "a refused worker must not open the store"
    client.close()


def test_the_queue_command_shows_an_evicting_policy_instead_of_refusing(
    commands: Commands, configured_redis: Configured, hitstream_env: dict[str, str]
) -> None:
    server = configured_redis("--maxmemory-policy", "allkeys-lru")
    env = {**hitstream_env, "HITSTREAM_REDIS_URL": server.url}
    text = run(commands, env, "queue")
    assert text.returncode == 0, text.stderr
    assert "redis eviction       allkeys-lru" in text.stdout
    assert any(line.startswith("WARNING: Redis maxmemory-policy is allkeys-lru") for line in text.stdout.splitlines())
    figures = orjson.loads(run(commands, env, "queue", "--json").stdout)
    assert figures["redis"]["maxmemory_policy"] == "allkeys-lru"
    assert "maxmemory-policy is allkeys-lru" in figures["redis"]["refusal"]


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_the_opt_out_variable_lets_every_process_kind_start(
    commands: Commands, configured_redis: Configured, processes: Processes, tmp_path: Path, policy: str
) -> None:
    server = configured_redis("--maxmemory-policy", policy)
    settings = {"HITSTREAM_REDIS_URL": server.url, "HITSTREAM_ALLOW_UNSAFE_REDIS": "1"}
    client = redis.Redis.from_url(server.url)

    api = processes.api(**settings)
    worker = processes.worker(tmp_path / "store", **settings)
    worker.wait_ready(client)
    added = run(commands, {**processes.env, **settings}, "sites", "add", "example.com")

    assert added.returncode == 0, added.stderr
    assert client.hlen(keys.SITE_BY_DOMAIN) == 1
    evicting = policy != "noeviction"
    assert f"hitstream_redis_evicting {float(evicting)}" in api.metrics()
    for output in (api.output(), worker.output(), added.stderr):
        assert ("HITSTREAM_ALLOW_UNSAFE_REDIS=1: running although" in output) == evicting, output
    client.close()


def test_without_aof_every_process_kind_warns_and_queue_and_metrics_show_it(
    commands: Commands, configured_redis: Configured, processes: Processes, tmp_path: Path
) -> None:
    server = configured_redis("--appendonly", "no")
    settings = {"HITSTREAM_REDIS_URL": server.url}
    client = redis.Redis.from_url(server.url)
    warning = "Redis runs without AOF (appendonly no): a Redis restart loses every queued pageview"

    api = processes.api(**settings)
    worker = processes.worker(tmp_path / "store", **settings)
    worker.wait_ready(client)
    env = {**processes.env, **settings}
    added = run(commands, env, "sites", "add", "example.com")
    queue_text = run(commands, env, "queue").stdout
    queue_json = orjson.loads(run(commands, env, "queue", "--json").stdout)

    assert added.returncode == 0 and warning in added.stderr
    assert warning in api.output() and warning in worker.output()
    assert "hitstream_redis_aof_enabled 0.0" in api.metrics()
    assert "redis AOF            OFF" in queue_text and f"WARNING: {warning}" in queue_text
    assert queue_json["redis"]["aof_enabled"] is False and queue_json["redis"]["refusal"] is None
    client.close()


def test_with_aof_and_noeviction_nothing_is_reported(commands: Commands, processes: Processes, redis_url: str) -> None:
    api = processes.api()
    queue_text = run(commands, processes.env, "queue").stdout
    added = run(commands, processes.env, "sites", "add", "example.com")

    assert "hitstream_redis_aof_enabled 1.0" in api.metrics()
    assert "hitstream_redis_evicting 0.0" in api.metrics()
    assert "redis AOF            on" in queue_text and "redis eviction       noeviction" in queue_text
    assert "WARNING" not in queue_text
    assert added.returncode == 0 and added.stderr == ""
    assert "Redis" not in api.output()


def test_a_redis_that_hides_its_settings_is_warned_about_not_refused(
    commands: Commands, configured_redis: Configured, processes: Processes
) -> None:
    # Managed services disable commands; with INFO gone hitstream cannot tell, so it says so.
    server = configured_redis("--rename-command", "INFO", "")
    env = {**processes.env, "HITSTREAM_REDIS_URL": server.url}

    added = run(commands, env, "sites", "add", "example.com")
    api = processes.api(HITSTREAM_REDIS_URL=server.url)

    assert added.returncode == 0, added.stderr
    for output in (added.stderr, api.output()):
        assert "Redis did not report its maxmemory-policy" in output
        assert "Redis did not report whether AOF is on" in output
    metrics = api.metrics()
    assert "hitstream_redis_aof_enabled NaN" in metrics and "hitstream_redis_evicting NaN" in metrics
    assert 'hitstream_queue_depth{lane="live"} 0.0' in metrics, "the queue figure does not depend on INFO"


@pytest.mark.parametrize(
    "arguments", [["worker"], ["dead-letters", "list"], ["sites", "add", "example.com"], ["tokens", "list"]]
)
def test_a_redis_that_does_not_answer_is_one_line_not_a_traceback(
    commands: Commands, hitstream_env: dict[str, str], arguments: list[str]
) -> None:
    result = run(commands, {**hitstream_env, "HITSTREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, *arguments)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis does not answer" in lines[0] and "HITSTREAM_REDIS_URL" in lines[0], result.stderr
