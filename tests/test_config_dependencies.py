"""The runtime dependencies pyproject.toml declares are the ones the code imports: none is
declared and never used (sqlite-utils was, issue 14 point 6)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A distribution's name where its import name differs.
IMPORTED_AS = {"pyserial": "serial", "prometheus-client": "prometheus_client"}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0] for spec in project["dependencies"]}
    return {IMPORTED_AS.get(name, name.replace("-", "_")) for name in names}


def imported(*folders: str) -> set[str]:
    """Top-level modules imported anywhere under the folders (in functions too)."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found


def test_every_declared_dependency_is_imported_by_the_station() -> None:
    assert declared() - imported("edgectl", "drivers") == set()


def test_sqlite_utils_is_neither_declared_nor_imported() -> None:
    assert "sqlite_utils" not in declared()
    assert "sqlite_utils" not in imported("edgectl", "drivers", "tests", "chaos", "bench")
