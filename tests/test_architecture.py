"""The layers' import rules (docs/architecture.md), read from every module's own imports.

Each module is parsed with `ast`, imports inside functions and `if TYPE_CHECKING:` blocks
included (a lazy import is still a dependency); relative imports are resolved. Two rules are
also measured: importing the control server does not load pymodbus, and importing the store
loads nothing of the cloud.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent

# The driver modules the station's wiring may import: the registry and the shared vocabulary.
REGISTRY_AND_BASE: Final = frozenset({"drivers", "drivers.registry", "drivers.base"})
# Library modules that do I/O (or schedule it): the domain imports none of them.
IO_MODULES: Final = ("asyncio", "serial", "sqlite3", "aiomqtt", "paho", "pymodbus", "socket")
# The CLI modules still importing a protocol's own modules, and which. None left: `decode`,
# `probe`, `simulate` and `demo` find their decoders, probers and simulators through the
# registry. The list may only shrink; it stays, empty, so that it cannot grow unseen.
CLI_PROTOCOL_TOOLS: Final[dict[str, set[str]]] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules(top: str) -> dict[str, Path]:
    """Every module of a top-level package (edgectl, drivers) by dotted name."""
    return {_module_name(p): p for p in sorted((ROOT / top).rglob("*.py"))}


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module `module` imports, anywhere in its body: `from a import b` gives `a.b`
    when that is a module of ours, else `a` (b is then a name in it)."""
    ours = _modules("edgectl") | _modules("drivers")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{anchor}.{node.module}" if node.module else anchor
            else:
                assert node.module is not None
                source = node.module
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield sub if sub in ours else source


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _driver_modules(name: str) -> bool:
    """Is `name` a real module of drivers/ (not `drivers.base.SomeClass`)?"""
    return name in _modules("drivers")


def _offences(prefix: str, forbidden: Callable[[str, str], bool]) -> list[str]:
    """`module imports name` for every forbidden import of a module at or under `prefix`."""
    top = prefix.partition(".")[0]
    found = []
    for module, path in _modules(top).items():
        if not _is_under(module, prefix):
            continue
        for name in _imports(module, path):
            if forbidden(module, name):
                found.append(f"{module} imports {name}")
    return sorted(set(found))


def test_the_import_parser_sees_lazy_imports() -> None:
    source = ROOT / "drivers" / "registry.py"
    names = set(_imports("drivers.registry", source))
    assert "drivers.wayne_dart.driver" in names  # imported inside a factory
    assert "drivers.sniffing" in names  # imported under TYPE_CHECKING
    assert "drivers.base" in names
    assert "drivers.base.TankGauge" not in names  # a name, not a module


def test_the_domain_imports_no_io() -> None:
    def forbidden(module: str, name: str) -> bool:
        if any(_is_under(name, io) for io in IO_MODULES):
            return True
        if any(_is_under(name, f"edgectl.{part}") for part in ("store", "cloud", "control")):
            return True
        return _driver_modules(name) and name not in REGISTRY_AND_BASE - {"drivers.registry"}

    assert _offences("edgectl.forecourt", forbidden) == []


def test_drivers_import_nothing_from_edgectl() -> None:
    def forbidden(module: str, name: str) -> bool:
        return _is_under(name, "edgectl")

    assert _offences("drivers", forbidden) == []


def test_the_store_imports_nothing_from_the_cloud() -> None:
    """The store speaks SQL: the cloud's messages are shaped by the `OutboxMessages` it is
    handed (`edgectl.cloud.messages`), not by anything it imports."""

    def forbidden(module: str, name: str) -> bool:
        return _is_under(name, "edgectl.cloud")

    assert _offences("edgectl.store", forbidden) == []


def test_the_store_offends_through_nothing_it_loads() -> None:
    """No offence at all, not even one step removed: importing every module of the store
    (in a fresh interpreter) loads no module of the cloud, nor an MQTT library."""
    modules = ", ".join(sorted(m for m in _modules("edgectl") if _is_under(m, "edgectl.store")))
    probe = (
        f"import sys, {modules}; "
        "print(sorted(m for m in sys.modules if m.startswith('edgectl.cloud')"
        " or m.split('.')[0] in ('aiomqtt', 'paho')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


WIRING: Final = (
    "edgectl.daemon",
    "edgectl.tank_service",
    "edgectl.config",
    "edgectl.metrics",
    "edgectl.devices",
    "edgectl.station",
)


@pytest.mark.parametrize("package", [*WIRING, "edgectl.control", "edgectl.cli"])
def test_the_station_finds_protocols_in_the_registry(package: str) -> None:
    """The daemon, the tank service, the control server and the CLI name no protocol's
    modules: they import drivers.registry and drivers.base only (CLI tools listed above)."""

    def forbidden(module: str, name: str) -> bool:
        if not _driver_modules(name) or name in REGISTRY_AND_BASE:
            return False
        return name not in CLI_PROTOCOL_TOOLS.get(module, set())

    assert _offences(package, forbidden) == []


def test_the_cli_tool_list_only_shrinks() -> None:
    """An entry of CLI_PROTOCOL_TOOLS that is no longer imported must be struck off."""
    modules = _modules("edgectl")
    for module, allowed in CLI_PROTOCOL_TOOLS.items():
        used = {n for n in _imports(module, modules[module]) if _driver_modules(n)}
        assert allowed <= used, f"{module} no longer imports {sorted(allowed - used)}"


def test_importing_the_control_server_does_not_load_pymodbus() -> None:
    """Every CLI call imports the control server (its client side shares the module's
    package): pymodbus, ~200 ms, is the daemon's business only when a gauge needs it."""
    probe = (
        "import sys, edgectl.control.server, drivers.registry as r; "
        "[r.lookup(n) for n in r.names('gauge') + r.names('dispenser')]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pymodbus'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_control_server_knows_no_daemon() -> None:
    """The daemon builds the control server and hands it the narrow `Served` view of the
    station (issue 14 point 5): the server imports nothing of edgectl.daemon, not even for
    its types, so the two form no import cycle."""
    server = "edgectl.control.server"
    assert "edgectl.daemon" not in set(_imports(server, _modules("edgectl")[server]))
    assert server in set(_imports("edgectl.daemon", _modules("edgectl")["edgectl.daemon"]))


def test_the_cloud_command_handler_asks_the_station_not_its_store() -> None:
    """Issue 14 point 5: the command handler calls intention-named station methods
    (`record_command`, `order_status`, `clear_sale`, …); it imports nothing of the store and
    names no `.store` of anything."""
    module = "edgectl.cloud.commands"
    path = _modules("edgectl")[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reaches = sorted(
        {n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"}
    )
    assert reaches == [], f"{module} reaches into a store on line(s) {reaches}"
    assert [n for n in _imports(module, path) if _is_under(n, "edgectl.store")] == []
