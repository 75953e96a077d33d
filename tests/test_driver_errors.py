"""Driver errors become edgectl's at one boundary (edgectl/driver_errors.py, issue 14.5):
the translation keeps the words, device and code, and no other module of edgectl names a
driver's exception, in an import, an `except` or an isinstance (read with `ast`)."""

from __future__ import annotations

import ast
import importlib
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest

from drivers.base import (
    CommandRejected,
    DeviceTimeout,
    DispenserStatus,
    DriverError,
    FrameError,
    TransportError,
)
from edgectl.driver_errors import TranslatedLine, translate, translated
from edgectl.errors import (
    DeviceRefusedError,
    DeviceTimeoutError,
    DriverIOError,
    EdgectlError,
    FrameDecodeError,
    LineUnavailableError,
)

ROOT: Final = Path(__file__).resolve().parent.parent
BOUNDARY: Final = "edgectl/driver_errors.py"


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (TransportError("port gone", device="line1"), LineUnavailableError),
        (DeviceTimeout("no answer", device="line1/0x50"), DeviceTimeoutError),
        (FrameError("bad block", device="tls"), FrameDecodeError),
        (CommandRejected("refused", device="line1/0x51", code="unsupported"), DeviceRefusedError),
        (DriverError("odd", device="x"), DriverIOError),
    ],
)
def test_each_driver_error_becomes_its_edgectl_branch(theirs: DriverError, ours: type) -> None:
    error = translate(theirs)
    assert type(error) is ours and isinstance(error, DriverIOError | EdgectlError)
    assert str(error) == str(theirs)  # "device: what", as the driver says it (logs, replies)
    assert (error.device, error.code) == (theirs.device, theirs.code)
    assert error.__cause__ is theirs


class _RefusingLine:
    name = "line1"

    def __init__(self) -> None:
        self.counters = {"frames_sent": 3}

    def is_online(self, address: int) -> bool:
        return True

    async def request_status(self, address: int) -> DispenserStatus:
        return DispenserStatus.RESET

    async def stop(self, address: int) -> None:
        raise DeviceTimeout("stop: no acknowledgement after 4 tries", device="line1/0x50")

    async def totals(self, address: int, nozzle: int) -> tuple[Decimal, Decimal]:
        raise CommandRejected("no such nozzle", device="line1/0x50")


async def test_a_translated_line_raises_edgectl_errors_and_passes_the_rest() -> None:
    line = TranslatedLine(_RefusingLine())  # type: ignore[arg-type]
    assert await line.request_status(0x50) is DispenserStatus.RESET
    with pytest.raises(DeviceTimeoutError, match="line1/0x50: stop: no acknowledgement"):
        await line.stop(0x50)
    with pytest.raises(DeviceRefusedError):
        await line.totals(0x50, 1)
    assert line.name == "line1" and line.is_online(0x50) and line.counters == {"frames_sent": 3}


def test_translated_leaves_other_errors_alone() -> None:
    with pytest.raises(LineUnavailableError), translated():
        raise TransportError("gone")
    with pytest.raises(KeyError), translated():
        raise KeyError("not a driver's")


def _driver_exception_names(tree: ast.AST) -> dict[str, str]:
    """Names bound by `from drivers… import X` to a driver exception class."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drivers"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                value: Any = getattr(module, alias.name, None)
                if isinstance(value, type) and issubclass(value, DriverError):
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _named_driver_errors(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module names a driver exception: imported, or reached as an attribute of a
    drivers module (`base.DriverError`, `registry.PortBusy`)."""
    found = [(0, f"imports {full}") for full in _driver_exception_names(tree).values()]
    modules = {
        alias.asname or alias.name: f"drivers.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "drivers"
        for alias in node.names
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module_name = modules.get(node.value.id)
            if module_name is None:
                continue
            value = getattr(importlib.import_module(module_name), node.attr, None)
            if isinstance(value, type) and issubclass(value, DriverError):
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_edgectl_names_driver_errors_only_at_the_boundary() -> None:
    offenders = []
    for path in sorted((ROOT / "edgectl").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == BOUNDARY:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), relative)
        offenders += [f"{relative}:{line}: {what}" for line, what in _named_driver_errors(tree)]
    assert offenders == []


def test_the_boundary_check_sees_what_it_forbids() -> None:
    """The check above is not blind: a module like the station's before the boundary is
    caught by it, whichever way it names the error."""
    before = ast.parse(
        "from drivers.base import DriverError as DE\n"
        "from drivers import probing\n"
        "try:\n    pass\nexcept (DE, probing.PortBusy):\n    pass\n"
    )
    assert _named_driver_errors(before) == [
        (0, "imports drivers.base.DriverError"),
        (5, "probing.PortBusy"),
    ]
