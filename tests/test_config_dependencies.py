"""The runtime dependencies pyproject.toml declares are the ones the code imports: none is
declared and never used (sqlite-utils was, issue 14 point 6)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A distribution's name where its import name differs.
IMPORTED_AS = {
    "pyserial": "serial",
    "prometheus-client": "prometheus_client",
    "paho-mqtt": "paho",
    "psycopg": "psycopg",
    "rfc3339-validator": "rfc3339_validator",
}
OWN = {"edgectl", "drivers"}
# Modules a declared distribution ships itself (pydantic's core is pinned by pydantic).
PART_OF = {"pydantic_core": "pydantic"}


def declared(extra: str | None = None) -> set[str]:
    """Import names of the runtime dependencies (or of one optional extra's)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    names = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0] for spec in specs}
    return {IMPORTED_AS.get(name, name.replace("-", "_")) for name in names}


def third_party(*folders: str, without: tuple[str, ...] = ()) -> set[str]:
    """What the folders import that is neither the standard library nor the project's own."""
    found = imported(*folders, without=without) - set(sys.stdlib_module_names) - OWN
    return {PART_OF.get(name, name) for name in found}


def imported(*folders: str, without: tuple[str, ...] = ()) -> set[str]:
    """Top-level modules imported anywhere under the folders (in functions too), leaving out
    the files under `without`."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if any(path.is_relative_to(ROOT / skip) for skip in without):
                continue
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


def test_every_module_the_station_imports_is_declared() -> None:
    """A library the code imports directly is declared, not left to come in with another
    (paho comes with aiomqtt, but the session and the client use it themselves)."""
    # The reference backend, and `edgectl cloud ingest` that runs it, use the backend extra.
    backend = ("edgectl/backend", "edgectl/cli/ingest.py")
    assert third_party("edgectl", "drivers", without=backend) - declared() == set()


def test_the_reference_backend_imports_only_what_it_declares() -> None:
    found = third_party("edgectl/backend", "edgectl/cli/ingest.py")
    assert found - declared() - declared("backend") == set()
