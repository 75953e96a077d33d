"""`edgectl close PUMP` / `edgectl open PUMP` against a running daemon (`edgectl run` as a
child process) on simulated DART pumps: the refusals, what status shows, the audit."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.wayne_dart.codec import DartStatus
from tests.control.clikit import DaemonProcess, cli, control_config, daemon_process, short_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def station() -> Iterator[DaemonProcess]:
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock", mode="attendant")
        with daemon_process(config) as daemon:
            yield daemon


def run(station: DaemonProcess, *args: str) -> Any:
    result = cli(*args, "--config", str(station.config_path), "--json")
    assert result.code == 0, result.err
    return result.json()


def audit_rows(station: DaemonProcess) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{station.config.store.path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        db.close()


def test_close_refuses_every_authorization_shows_closed_and_is_audited(
    station: DaemonProcess,
) -> None:
    config = str(station.config_path)
    result = cli("close", "2", "--reason", "nozzle 2 leaking", "--config", config)
    assert result.code == 0, result.err
    assert result.out.strip() == "pump 2 closed: no authorization until it is opened again"
    row = audit_rows(station)[-1]
    assert row["action"] == "close" and row["outcome"] == "ok"
    assert json.loads(row["args"]) == {"pump": 2, "reason": "nozzle 2 leaking"}
    assert row["client_user"] and row["peer_uid"] is not None
    assert row["message"] == result.out.strip()

    pumps = run(station, "pumps")
    assert [(p["pump"], p["state"], p["closed"]) for p in pumps] == [
        (1, "IDLE", False),
        (2, "CLOSED", True),
    ]
    status = run(station, "status")
    assert [(p["pump"], p["state"]) for p in status["pumps"]] == [(1, "IDLE"), (2, "CLOSED")]
    people = cli("status", "--config", config)
    assert people.code == 0
    (line,) = [text for text in people.out.splitlines() if "pump 2" in text]
    assert "CLOSED" in line

    refused = cli("authorize", "2", "--amount", "20", "--config", config)
    assert refused.code == 1 and refused.out == ""
    assert "pump 2 is closed" in refused.err and "Traceback" not in refused.err
    assert audit_rows(station)[-1]["outcome"] == "failed"
    assert station.sims["l0"].pump(0x51).status is DartStatus.RESET

    again = run(station, "close", "2")
    assert again["message"].startswith("pump 2 was already closed (since ")

    opened = run(station, "open", "2")
    assert opened == {"message": "pump 2 open again", "pump": 2, "closed": False}
    assert audit_rows(station)[-1]["action"] == "open"
    station.wait_for(lambda: station.pump_view(2)["state"] == "IDLE", "pump 2 idle")
    assert run(station, "authorize", "2", "--amount", "20")["state"] == "authorized"
    run(station, "stop", "2")
    station.wait_for(
        lambda: station.sims["l0"].pump(0x51).status is DartStatus.RESET, "pump 2 reset"
    )


def test_close_and_open_an_unknown_pump(station: DaemonProcess) -> None:
    for action in ("close", "open"):
        result = cli(action, "9", "--config", str(station.config_path))
        assert result.code == 1 and "unknown pump 9" in result.err
    result = cli("open", "1", "--config", str(station.config_path), "--json")
    assert result.code == 0 and result.json()["message"] == "pump 1 was not closed"


def test_help_says_what_a_closed_pump_means() -> None:
    result = cli("close", "--help")
    assert result.code == 0 and "pump_closed" in result.out and "edgectl open" in result.out
