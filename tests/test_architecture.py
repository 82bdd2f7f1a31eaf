"""The import rule of docs/architecture.md, checked on the real imports of every module:
contracts at the bottom (``shared``), the API and the workers above them and never each
other, the command line on top, the clients apart; inside the workers, the RQ runtime above a
batch's life above the pipeline and the store, the host's threads apart; no cycles; no
``import_module``."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "ingest_api", "workers", "hitstream")

# Who may import whom, by the longest matching prefix of the importing module's name. The
# clients (the replay tool, the Python client) are handed to users: they lean on nothing of
# the server but the wire contract's names and the trusted-proxy rule in ``shared``.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "shared": ("shared",),
    "ingest_api": ("ingest_api", "shared"),
    "workers": ("workers", "shared"),
    # The RQ runtime (a worker process: its context, roles, jobs, dispatcher, the thread that
    # answers stats from its embedded store) runs a batch's life and starts the host's threads;
    # nothing below it imports it (the stats reader beside it, which the command line uses,
    # sends that thread its queries).
    "workers.runtime": (
        "workers.runtime",
        "workers.batch",
        "workers.host",
        "workers.pipeline",
        "workers.store",
        "shared",
    ),
    # A batch's life (claim, enrich, deliver, store writer, dead letters) uses the pipeline and
    # the store, never the runtime that runs it or the host's threads.
    "workers.batch": (
        "workers.batch",
        "workers.pipeline",
        "workers.store",
        "workers.records",
        "workers.redaction",
        "shared",
    ),
    # The host's threads (metrics endpoint, Redis file rewrite) serve the host, not a batch.
    "workers.host": ("workers.host", "shared"),
    # The pipeline turns one envelope into a row or a drop: it knows nothing of batches.
    "workers.pipeline": (
        "workers.pipeline",
        "workers.records",
        "workers.redaction",
        "workers.envelope_check",
        "shared",
    ),
    # The store library writes the rows the pipeline makes: their types (workers.records, which
    # imports nothing of the project) are the one thing it shares with the floor above.
    "workers.store": ("workers.store", "workers.records", "shared"),
    "hitstream": PACKAGES,
    "hitstream.replay": ("hitstream.replay", "shared.lanes"),
    "hitstream.client": ("hitstream.client", "hitstream.replay.sender", "shared.lanes", "shared.proxies"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def is_within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every project module ``module`` imports, at any depth of its code (a function-level
    import is as much a dependency as a top-level one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from package import module`` names a module; ``from module import name`` does not
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] in PACKAGES)


def dependencies() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {name for name in imported_names(module, path) if name in modules}
        graph[module] = targets - {module}
    return graph


def rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    owner = max((prefix for prefix in MAY_IMPORT if is_within(module, prefix)), key=len)
    return owner, MAY_IMPORT[owner]


def test_every_module_imports_only_what_its_floor_may() -> None:
    broken = [
        f"{module} ({owner}) imports {target}"
        for module, targets in dependencies().items()
        for owner, allowed in [rule_for(module)]
        for target in sorted(targets)
        if not any(is_within(target, prefix) for prefix in allowed)
    ]
    assert broken == []


def test_the_modules_import_each_other_without_a_cycle() -> None:
    try:
        tuple(graphlib.TopologicalSorter(dependencies()).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_no_module_loads_project_code_by_name_at_run_time() -> None:
    loaders = {"import_module", "__import__"}
    found = [
        f"{module}:{node.lineno}"
        for module, path in project_modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name | ast.Attribute)
        and (getattr(node, "id", None) or getattr(node, "attr", None)) in loaders
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "imports", "allowed"),
    [
        ("shared.keys", "ingest_api.app", False),
        ("ingest_api.app", "workers.runtime.jobs", False),
        ("workers.runtime.jobs", "ingest_api.intake", False),
        ("workers.store.store", "workers.runtime", False),
        ("workers.batch.loop", "workers.runtime.context", False),
        ("workers.batch.store_writer", "workers.runtime.processes", False),
        ("workers.batch.delivery", "workers.host.metrics_endpoint", False),
        ("workers.host.redis_rewrite", "workers.batch.queue", False),
        ("workers.host.metrics_endpoint", "workers.runtime.processes", False),
        ("workers.pipeline.pipeline", "workers.batch.enrichment", False),
        ("workers.runtime.jobs", "workers.batch.loop", True),
        ("workers.runtime.processes", "workers.host.metrics_endpoint", True),
        ("hitstream.replay.sender", "shared.config", False),
        ("workers.runtime.jobs", "workers.store.store", True),
        ("hitstream.main", "workers.runtime.processes", True),
        ("workers.runtime.stats_answers", "workers.store.store", True),
        ("workers.store.stats", "workers.runtime.stats_answers", False),
        ("workers.stats_reader", "workers.runtime.stats_answers", True),
    ],
)
def test_the_rule_itself_refuses_upward_and_sideways_imports(module: str, imports: str, allowed: bool) -> None:
    _, prefixes = rule_for(module)
    assert any(is_within(imports, prefix) for prefix in prefixes) is allowed
