"""config/station.schema.json: the JSON Schema of station.toml that editors check files
against (issue 14 point 6). It is generated from the models, and the shipped station
configs are valid by it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edgectl.cli.configcheck import schema_text
from edgectl.cli.main import main
from edgectl.config import json_schema

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
SHIPPED = CONFIG_DIR / "station.schema.json"
# The station configs in config/ (config/modbus/ holds register maps, another shape).
STATIONS = sorted(CONFIG_DIR.glob("*.toml"))


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SHIPPED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(data: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator().iter_errors(data)
    )


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == schema_text(), (
        "config/station.schema.json is out of date: edgectl config schema > "
        "config/station.schema.json"
    )


def test_edgectl_config_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_there_are_station_configs_to_check() -> None:
    assert {p.name for p in STATIONS} >= {"demo.toml", "station.example.toml"}


@pytest.mark.parametrize("path", STATIONS, ids=lambda p: p.name)
def test_every_station_config_in_config_is_valid_by_it(path: Path) -> None:
    assert problems(tomllib.loads(path.read_text(encoding="utf-8"))) == []


def demo() -> dict[str, Any]:
    return tomllib.loads((CONFIG_DIR / "demo.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["pumps"][0].update(adress=0x51), "pumps.0: Additional properties"),
        (lambda d: d["grades"][0].update(unit_price=7.45), "grades.0.unit_price: 7.45 is not"),
        (lambda d: d["lines"][0].update(parity="Odd"), "lines.0.parity: 'Odd' is not one of"),
        (lambda d: d["lines"][0].update(retries=11), "lines.0.retries: 11 is greater than"),
        (lambda d: d["pumps"][0]["nozzles"].update({"16": "92"}), "pumps.0.nozzles: '16'"),
        (lambda d: d.pop("station"), ": 'station' is a required property"),
        (lambda d: d["pumps"][0].update(volume_decimals=3), "pumps.0: Additional properties"),
    ],
)
def test_what_an_editor_is_told(change: Any, expected: str) -> None:
    """The schema catches the shape's mistakes as an editor shows them; the loader's own
    messages (tests/test_config.py) also catch what a schema cannot."""
    data = demo()
    change(data)
    found = problems(data)
    assert any(line.startswith(expected) for line in found), found


def test_keys_the_file_may_leave_out_are_not_required() -> None:
    schema = json_schema()
    cloud = schema["$defs"]["CloudConfig"]
    assert "client_id" not in cloud.get("required", [])  # edgectl-<station id>
    assert "password_file" in cloud["properties"]
    key = schema["$defs"]["CommandKey"]
    assert key["required"] == ["id"] and "public_key_file" in key["properties"]
    assert schema["required"][:2] == ["station", "store"]
    assert {"grades", "lines", "pumps"} <= set(schema["required"])
    assert "source" not in schema["properties"]  # set by the loader, not in the file
