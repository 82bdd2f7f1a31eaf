"""The deployment files name real commands and real settings, and wire what the docs promise.

There is no Docker engine or cluster here, so the files are parsed and checked, not run.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from hitstream.main import cli
from shared import keys
from shared.config import VARIABLE_NAMES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def compose_services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def kubernetes_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        objects.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    return objects


def kubernetes_object(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = [re.fullmatch(r"([A-Za-z0-9_-]+):\s*(.+)", line) for line in lines if not line.startswith("#")]
    assert all(entries), "every Procfile line is 'name: command' or a comment"
    return {entry.group(1): entry.group(2) for entry in entries if entry}


def hitstream_commands() -> Iterator[list[str]]:
    """Every command line in the deploy files and the Procfile that runs hitstream."""
    for service in compose_services().values():
        if "command" in service and service["command"][0] == "hitstream":
            yield service["command"]
    for workload in kubernetes_objects():
        if workload["kind"] in {"Deployment", "Job"}:
            for container in pod_containers(workload):
                yield container["command"]
    for command in procfile().values():
        yield shlex.split(command)


def env_names_used() -> set[str]:
    texts = [path.read_text() for path in DEPLOY.rglob("*") if path.is_file()]
    texts.append((ROOT / "Procfile").read_text())
    return {name for text in texts for name in re.findall(r"\bHITSTREAM_[A-Z0-9_]+\b", text)}


def test_every_hitstream_variable_in_deploy_files_is_a_real_setting() -> None:
    used = env_names_used()
    assert {"HITSTREAM_REDIS_URL", "HITSTREAM_CLICKHOUSE_URL"} <= used
    assert used - set(VARIABLE_NAMES) == set()


def test_every_command_is_a_real_hitstream_sub_command() -> None:
    commands = list(hitstream_commands())
    assert len(commands) >= 8  # compose: migrate, api, worker; k8s: 3; Procfile: 2
    for command in commands:
        assert command[0] == "hitstream"
        assert command[1] in cli.list_commands(click.Context(cli)), f"{command[1]!r} is not a hitstream sub-command"


def test_compose_redis_fsyncs_every_write_as_the_default_durability_mode_needs() -> None:
    redis = compose_services()["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_compose_runs_migrate_once_before_api_and_workers_on_a_clickhouse_server() -> None:
    services = compose_services()
    assert "clickhouse-server" in services["clickhouse"]["image"]
    migrate = services["migrate"]
    assert migrate["command"] == ["hitstream", "migrate"]
    assert migrate["restart"] == "no"
    for name in ("api", "worker"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["HITSTREAM_CLICKHOUSE_URL"].startswith("http://")
        assert "@clickhouse:8123/" in service["environment"]["HITSTREAM_CLICKHOUSE_URL"]
        assert service["environment"]["HITSTREAM_REDIS_URL"] == "redis://redis:6379/0"


def test_compose_api_and_worker_can_be_scaled_independently() -> None:
    services = compose_services()
    assert services["api"]["command"][:2] == ["hitstream", "api"]
    assert services["worker"]["command"][:2] == ["hitstream", "worker"]
    for name in ("api", "worker"):
        # A fixed container name or a single fixed host port makes `--scale` fail.
        assert "container_name" not in services[name]
        for mapping in services[name].get("ports", []):
            host_ports = mapping.rsplit(":", 1)[0]
            assert "-" in host_ports, f"{name} publishes one fixed host port: {mapping}"


def test_kubernetes_api_is_probed_and_scaled_on_cpu() -> None:
    api = kubernetes_object("Deployment", "hitstream-api")
    (container,) = pod_containers(api)
    assert container["command"][:2] == ["hitstream", "api"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "cpu" in container["resources"]["requests"]

    hpa = kubernetes_object("HorizontalPodAutoscaler", "hitstream-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hitstream-api"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_kubernetes_workers_are_scaled_by_keda_on_each_lanes_stream() -> None:
    worker = kubernetes_object("Deployment", "hitstream-worker")
    (container,) = pod_containers(worker)
    assert container["command"] == ["hitstream", "worker"]

    scaled = kubernetes_object("ScaledObject", "hitstream-worker")
    assert scaled["apiVersion"].startswith("keda.sh/")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "hitstream-worker"
    triggers = scaled["spec"]["triggers"]
    assert [trigger["metadata"]["stream"] for trigger in triggers] == [keys.STREAM, keys.BULK_STREAM]
    config = kubernetes_object("ConfigMap", "hitstream-config")
    for trigger in triggers:
        assert trigger["type"] == "redis-streams"
        # XLEN counts waiting and claimed pageviews; a consumer group would switch KEDA to PEL size.
        assert "streamLength" in trigger["metadata"]
        assert "consumerGroup" not in trigger["metadata"]
        assert config["data"]["HITSTREAM_REDIS_URL"].startswith(f"redis://{trigger['metadata']['address']}/")

    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config["data"]["HITSTREAM_CLAIM_TIMEOUT"])


def test_compose_workers_serve_their_metrics_on_a_published_port() -> None:
    worker = compose_services()["worker"]
    port = worker["environment"]["HITSTREAM_WORKER_METRICS_PORT"]
    assert [mapping.rsplit(":", 1)[1] for mapping in worker["ports"]] == [port]
    # The default address is loopback: a published port (or Prometheus on the compose network)
    # reaches only an endpoint listening on the container's interfaces.
    assert worker["environment"]["HITSTREAM_WORKER_METRICS_HOST"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("name", "port_name"), [("hitstream-api", "http"), ("hitstream-worker", "metrics")], ids=["api", "worker"]
)
def test_kubernetes_pods_announce_the_port_their_metrics_are_served_on(name: str, port_name: str) -> None:
    workload = kubernetes_object("Deployment", name)
    (container,) = pod_containers(workload)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(ports[port_name])
    if name == "hitstream-worker":
        settings = {variable["name"]: variable["value"] for variable in container["env"]}
        assert settings["HITSTREAM_WORKER_METRICS_PORT"] == str(ports[port_name])
        # Prometheus scrapes the pod's IP; the default address (loopback) would refuse it.
        assert settings["HITSTREAM_WORKER_METRICS_HOST"] == "0.0.0.0"


def test_the_image_holds_every_package_the_project_installs() -> None:
    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in included}
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE))
    assert packages - copied == set()


def test_kubernetes_migrate_job_and_every_pod_gets_its_settings() -> None:
    job = kubernetes_object("Job", "hitstream-migrate")
    (container,) = pod_containers(job)
    assert container["command"] == ["hitstream", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}

    secret = kubernetes_object("Secret", "hitstream-clickhouse")
    assert "HITSTREAM_CLICKHOUSE_URL" in secret["stringData"]
    for kind, name in (("Job", "hitstream-migrate"), ("Deployment", "hitstream-worker")):
        (container,) = pod_containers(kubernetes_object(kind, name))
        sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
        assert sources == {"hitstream-config", "hitstream-clickhouse"}


def test_procfile_runs_api_on_port_and_worker() -> None:
    processes = procfile()
    assert processes == {"api": "hitstream api --host 0.0.0.0 --port $PORT", "worker": "hitstream worker"}


@pytest.mark.parametrize(
    "phrase",
    [
        "hitstream migrate --cluster",
        "ReplicatedMergeTree",
        "Distributed",
        "{shard}",
        "{replica}",
        "appendfsync always",
        "HITSTREAM_DURABILITY",
        "Sentinel",
    ],
)
def test_deploy_readme_covers_cluster_and_redis_high_availability(phrase: str) -> None:
    assert phrase in (DEPLOY / "README.md").read_text()
