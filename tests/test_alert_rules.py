"""deploy/prometheus's alert rules pass ``promtool check rules`` and their own ``promtool test
rules`` unit tests (skipped only where promtool is not installed: Debian's ``prometheus``
package ships it, and .ci/run installs it), and every metric the rules and deploy/grafana's
dashboard query is one that the API or the workers expose under that name."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingest_api.metrics import Metrics
from workers.batch import metrics as worker_metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "hitstream-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "hitstream-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "hitstream.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
# promtool runs as a child process: the processes tier (tests/tiers.py).
runs_promtool = pytest.mark.usefixtures("commands")
METRIC_NAME = re.compile(r"\bhitstream_[a-z_]+\b")
_SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *arguments], cwd=RULES.parent, capture_output=True, text=True, timeout=60)


@needs_promtool
@runs_promtool
def test_the_alert_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout


@needs_promtool
@runs_promtool
def test_the_alert_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
@runs_promtool
def test_a_broken_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The control: the unit tests do compare what fires (a wrong threshold is caught)."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 300", "> 3000"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    tested = subprocess.run(
        [PROMTOOL or "", "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode == 1
    assert "HitstreamLiveQueueOldEntry" in tested.stdout + tested.stderr


def exposed_families() -> dict[str, str]:
    """Every metric family (name -> type) the API's /metrics and a worker host's endpoint show,
    without prometheus_client's ``_created`` timestamps (no query needs them)."""
    pages = [Metrics().render().decode(), generate_latest(worker_metrics.REGISTRY).decode()]
    families = (family for page in pages for family in text_string_to_metric_families(page))
    return {family.name: family.type for family in families if not family.name.endswith("_created")}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_rules_and_the_dashboard_query_only_metrics_hitstream_exposes() -> None:
    families = exposed_families()
    samples = {name + suffix for name, kind in families.items() for suffix in _SAMPLE_SUFFIXES[kind]}
    queries = [RULES.read_text(), *dashboard_queries()]
    queried = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert queried - samples == set()


def test_the_dashboard_shows_every_metric_family() -> None:
    queries = " ".join(dashboard_queries())
    assert [name for name in exposed_families() if name not in queries] == []


def test_every_dashboard_panel_has_its_own_id_and_a_prometheus_query() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
