"""What ``pip install`` ships: every package-data pattern matches a file, and every runtime
dependency is imported by the packages themselves (a library only bench/ or tests/ use
belongs to an extra)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ["ingest_api", "workers", "shared", "hitstream"]
# Runtime dependencies no module imports by name: each is loaded by another library.
LOADED_BY_ANOTHER_LIBRARY = {
    "chdb": "clickhouse-connect, for chdb:// DSNs",
}


def distribution_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_top_level_modules() -> set[str]:
    modules = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules.add(node.module.split(".")[0])
    return modules


def test_every_package_data_pattern_matches_a_file() -> None:
    for package, patterns in PROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"{package}: {pattern} matches no file"


def test_every_runtime_dependency_is_imported_by_the_packages() -> None:
    imported = imported_top_level_modules()
    distributions_of = importlib.metadata.packages_distributions()
    imported_distributions = {
        name.lower().replace("_", "-") for module in imported for name in distributions_of.get(module, [])
    }
    unused = {
        distribution_name(requirement)
        for requirement in PROJECT["project"]["dependencies"]
        if distribution_name(requirement) not in imported_distributions
    }
    assert unused == set(LOADED_BY_ANOTHER_LIBRARY)
