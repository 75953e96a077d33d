"""`edgectl cloud`: keygen, then every action against a real Mosquitto and the real daemon on
simulated pumps, run as a technician runs it; usage errors; the demo with a broker."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, preset_fill
from edgectl.cli.cloud import describe
from edgectl.cli.main import main
from edgectl.cloud.signing import load_private_key, sign_command, verify_command
from edgectl.config import parse_config
from tests.cloud.test_contract import schema_errors
from tests.mqttkit import MOSQUITTO, MosquittoBroker
from tests.stationkit import RunningStation, rows, running_station, until, write_config
from tests.test_cli_demo import demo_copy


def test_keygen_writes_pair_and_prints_config_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["cloud", "keygen", "--id", "cloud-2026a", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    private_path = out / "cloud-2026a.key"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert str(private_path) in stdout

    # The printed block pastes into a station config as it is.
    block = stdout[stdout.index("[[cloud.command_keys]]") :]
    station = {
        "station": {"id": "S-1"},
        "store": {"path": "/tmp/x.db"},
        "grades": [{"id": "92", "name": "92", "unit_price": "7.45"}],
        "lines": [{"name": "a", "port": "/dev/x", "protocol": "wayne_dart"}],
        "pumps": [{"number": 1, "line": "a", "address": 0x50, "nozzles": {"1": "92"}}],
        "cloud": {"host": "broker", **tomllib.loads(block)["cloud"]},
    }
    config = parse_config(station, source=tmp_path / "station.toml")
    assert config.cloud is not None
    [key] = config.cloud.command_keys
    assert key.id == "cloud-2026a"

    # ... and the station verifies what the private key signs.
    signed = sign_command({"cmd_id": "c1"}, load_private_key(private_path), "cloud-2026a")
    ring = {key.id: Ed25519PublicKey.from_public_bytes(key.public_key)}
    assert verify_command(signed, ring) == "cloud-2026a"


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("edgectl cloud keygen: ")
    assert "already exists" in captured.err


def test_keygen_unwritable_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgectl cloud keygen: cannot write the key pair")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["cloud"],
        ["cloud", "keygen"],
        ["cloud", "keygen", "--id", "bad id"],
        ["cloud", "frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: edgectl cloud" in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["cloud", "--help"], ["cloud", "keygen", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "edgectl cloud keygen --id cloud-2026a" in capsys.readouterr().out


# --------------------------------------------------------------------------- usage and help

SEND_ACTIONS = ("authorize", "cancel", "stop", "prices", "clear")
WHERE = ["--broker", "127.0.0.1", "--station", "S-1"]


W = "--broker 127.0.0.1 --station S-1"


@pytest.mark.parametrize(
    "command",
    [
        "stop --key k.key --pump 1",  # where is the station?
        "stop --broker 127.0.0.1 --key k.key --pump 1",
        f"stop {W} --pump 1",  # no --key
        f"stop {W} --key k.key --pump 100",
        f"authorize {W} --key k.key --pump 1",  # no preset
        f"authorize {W} --key k.key --pump 1 --amount 1e3",
        f"authorize {W} --key k.key --pump 1 --amount 0",
        f"authorize {W} --key k.key --pump 1 --amount 5 --volume 5",
        f"prices {W} --key k.key --grade 95:7.58",
        f"prices {W} --key k.key --grade 95=7.58 --effective-at 2026-11-25T00:00:00",
        f"clear {W} --key k.key --order-id o-1 --sale-id 1",
        f"follow {W} --cert c.pem",  # a certificate without its key
        "follow --broker http://host/ --station S-1",
        "follow --broker 127.0.0.1:99999 --station S-1",
        f"follow {W} --prefix a/+/b",
    ],
)
def test_cloud_action_usage_errors_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cloud", *command.split()]
    if "k.key" in argv:  # a real key, so that only the usage is wrong
        main(["cloud", "keygen", "--id", "k", "--out", str(tmp_path)])
        argv = [str(tmp_path / "k.key") if a == "k.key" else a for a in argv]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"usage: edgectl cloud {argv[1]}" in capsys.readouterr().err


def test_a_command_the_contract_refuses_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["cloud", "keygen", "--id", "k", "--out", str(tmp_path)])
    capsys.readouterr()
    argv = ["cloud", "authorize", *WHERE, "--key", str(tmp_path / "k.key"), "--pump", "1"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--amount", "5", "--grade", "95", "--grade", "95"])
    assert info.value.code == 2
    assert "data.grades: must not name the same item twice" in capsys.readouterr().err


@pytest.mark.parametrize("action", [*SEND_ACTIONS, "follow"])
def test_every_action_help_has_an_example(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["cloud", action, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"edgectl cloud {action} --" in out
    assert "exit status:" in out


def test_a_missing_key_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cloud", "stop", *WHERE, "--key", "/nonexistent/k.key", "--pump", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert err == "edgectl cloud stop: /nonexistent/k.key: private key file not found\n"


# --------------------------------------------------------------------------- against a station

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def edgectl(*argv: str, timeout: float = 30) -> Run:
    """`edgectl ARGS` as a technician runs it, while the station runs in this event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgectl", *argv, stdout=PIPE, stderr=PIPE, cwd=ROOT
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in run.out + run.err, run
    return run


@dataclass
class Site:
    config: Path
    key: Path
    station: RunningStation

    def args(self, action: str, *argv: str) -> list[str]:
        return ["cloud", action, "--config", str(self.config), "--key", str(self.key), *argv]


def patient_line(config: Path) -> None:
    """Line timing is not under test here: a loaded machine must not take the pumps offline
    while the tool starts (40 ms, the kit's reply timeout, is tight for a busy CI box)."""
    text = config.read_text()
    assert "reply_timeout_ms = 150" in text
    config.write_text(text.replace("reply_timeout_ms = 150", "reply_timeout_ms = 250"))


@pytest.fixture
async def site(
    tmp_path: Path, mosquitto: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Site]:
    """A station in cloud mode trusting a key made by `edgectl cloud keygen`, pasted as the
    tool prints it."""
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    block = out[out.index("[[cloud.command_keys]]") :]
    cloud = (
        f'\n[cloud]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ntls = false\n'
        f"heartbeat_s = 2\nreconnect_min_s = 0.2\nreconnect_max_s = 1\n\n{block}"
    )
    config = write_config(tmp_path, mode="cloud", extra=cloud)
    patient_line(config)
    async with running_station(config, flow_rate_lps=20.0) as st:
        link = st.daemon.cloud
        assert link is not None
        await until(lambda: link.session.connected, what="station connected")
        yield Site(config, tmp_path / "keys" / "k1.key", st)


@pytest.mark.slow
async def test_authorize_then_the_same_cmd_id_again_acts_once(site: Site) -> None:
    argv = site.args("authorize", "--pump", "1", "--amount", "20.00", "--cmd-id", "c-cli-1")
    first = await edgectl(*argv)
    assert first.code == 0, first
    assert "authorize c-cli-1 to station TEST-01 via 127.0.0.1:" in first.lines[0]
    assert "(key k1)" in first.lines[0]
    assert "result     accepted (ok): pump 1 authorized for 20.00 CNY" in first.lines[1]
    assert "[cmd c-cli-1, authorize, order o-cli-1]" in first.lines[1]
    pump = site.station.pump(1)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="pump authorized")

    again = await edgectl(*argv)
    assert again.code == 0, again
    assert "accepted (ok)" in again.out and "a repeat" in again.out
    assert len(site.station.rows("SELECT * FROM authorizations")) == 1

    cancelled = await edgectl(*site.args("cancel", "--order-id", "o-cli-1"))
    assert cancelled.code == 0, cancelled
    assert "accepted (ok): order o-cli-1 cancelled" in cancelled.out
    await until(lambda: pump.status is DartStatus.RESET, what="pump de-authorized")


@pytest.mark.slow
async def test_authorize_follow_prints_the_order_until_its_sale(site: Site) -> None:
    argv = site.args("authorize", "--pump", "2", "--volume", "1.5", "--nozzle", "1", "--follow")
    run = asyncio.create_task(edgectl(*argv))
    pump = site.station.pump(2)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="pump authorized")
    await Customer(pump, preset_fill(1, react_s=0.1)).run()
    result = await run
    assert result.code == 0, result
    assert result.lines[2].startswith("following order o-"), result.out
    steps = [line.split(maxsplit=2)[1:] for line in (result.lines[1], *result.lines[3:])]
    kinds = [kind for kind, _ in steps]
    assert kinds == ["result", "order", "order", "order", "order"], result.out
    orders = [text for kind, text in steps if kind == "order"]
    statuses = [text.split(": ")[1].split()[0] for text in orders]
    assert statuses == ["accepted", "authorized", "fuelling", "completed"]
    assert "-- sale 1: pump 2 nozzle 1 grade 92, 1.50 L" in orders[-1]


@pytest.mark.slow
async def test_keys_the_station_does_not_trust_are_rejected(site: Site, tmp_path: Path) -> None:
    assert main(["cloud", "keygen", "--id", "k2", "--out", str(tmp_path / "other")]) == 0
    other = str(tmp_path / "other" / "k2.key")
    base = ["--config", str(site.config), "--pump", "1", "--amount", "20.00"]
    unknown = await edgectl("cloud", "authorize", *base, "--key", other)
    assert unknown.code == 1, unknown
    assert "rejected (unknown_key): unknown signing key 'k2'" in unknown.out
    forged = await edgectl("cloud", "authorize", *base, "--key", other, "--key-id", "k1")
    assert forged.code == 1, forged
    assert "rejected (bad_signature)" in forged.out
    assert site.station.rows("SELECT * FROM authorizations") == []
    assert site.station.pump(1).status is DartStatus.RESET


@pytest.mark.slow
async def test_json_prints_the_raw_result_messages(site: Site) -> None:
    stop = await edgectl(*site.args("stop", "--pump", "2", "--json"))
    assert stop.code == 0, stop
    [line] = stop.lines
    message = json.loads(line)
    assert schema_errors("result", message) == []
    assert message["station"] == "TEST-01"
    assert (message["data"]["type"], message["data"]["status"]) == ("stop", "accepted")

    unknown_sale = await edgectl(*site.args("clear", "--sale-id", "99", "--json"))
    assert unknown_sale.code == 1
    [line] = unknown_sale.lines
    data = json.loads(line)["data"]
    assert (data["status"], data["code"]) == ("rejected", "unknown")


@pytest.mark.slow
async def test_follow_prints_states_results_and_events_until_ctrl_c(site: Site) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgectl",
        "cloud",
        "follow",
        "--config",
        str(site.config),
        stdout=PIPE,
        stderr=PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    seen: list[str] = []

    async def until_line(text: str) -> None:
        async with asyncio.timeout(15):
            while not any(text in line for line in seen):
                seen.append((await proc.stdout.readline()).decode())  # type: ignore[union-attr]

    try:
        await until_line("pump 2: idle (reset)")
        assert any("online     station online (edgectl" in line for line in seen)
        prices = await edgectl(
            *site.args("prices", "--grade", "92=7.50", "--price-set-id", "ps-cli")
        )
        assert prices.code == 0, prices
        await until_line("price set ps-cli on pump 2: applied -- 92 7.50")
        await until_line("in force: ps-cli -- 92 7.50, 95 7.93, diesel 7.10 CNY")
        # Results sent to another tool's reply topic are shown too.
        assert any("result     accepted (ok): price set ps-cli accepted" in x for x in seen)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err
    assert "Traceback" not in out.decode() + err.decode()
    assert seen[0].startswith("following station TEST-01 on 127.0.0.1:")


async def test_no_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert main(["cloud", "keygen", "--id", "k", "--out", str(tmp_path)]) == 0
        key = str(tmp_path / "k.key")
        run = await edgectl(
            *f"cloud stop --broker 127.0.0.1:{port} --station S-1 --pump 1 --key".split(), key
        )
    assert run.code == 1
    assert run.out == ""
    assert run.err == (
        f"edgectl cloud stop: cannot connect to the broker at 127.0.0.1:{port}: "
        "Connection refused\n"
    )


@pytest.mark.slow
async def test_no_answer_in_time_is_one_line_and_exit_1(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    assert main(["cloud", "keygen", "--id", "k", "--out", str(tmp_path)]) == 0
    where = f"--broker 127.0.0.1:{mosquitto.port} --station NOBODY"
    run = await edgectl(
        *f"cloud cancel {where} --order-id o-1 --timeout 0.5 --key".split(),
        str(tmp_path / "k.key"),
    )
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert run.err.startswith("edgectl cloud cancel: no answer from station NOBODY within 0.5 s")


# --------------------------------------------------------------------------- the demo


@pytest.mark.slow
@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (make installs it)")
def test_demo_with_a_private_broker_sends_orders_that_are_accepted(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    options = ["--no-ui", "--with-broker", "--order-every", "2", "--duration", "8", "--seed", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "edgectl", "demo", "--config", str(config), *options],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out
    assert "(private mosquitto)" in out
    assert re.search(r"cloud: order o-demo-\S+ pump [246] .*: accepted \(ok\)", out), out
    summary = re.search(r"pay-at-pump: (\d+) orders sent, (\d+) accepted", out)
    assert summary is not None and int(summary.group(2)) >= 1, out
    orders = rows(tmp_path / "demo.db", "SELECT * FROM orders")
    # Orders go to the pumps kept for them: the last of each line (DART north, south; IFSF east).
    assert orders and all(o["pump"] in (2, 4, 6) for o in orders)
    assert (tmp_path / "demo-cloud-keys" / "demo-cloud.key").exists()


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"unreadable": "not json"},
        {"schema": "edgectl/v1/order", "data": None},
        {"schema": "edgectl/v1/order", "data": {}},
        {"schema": "edgectl/v1/pump_state", "data": {"online": True, "nozzle": 2}},
        {"schema": "edgectl/v1/price", "data": {"prices": [1, 2]}},
        {"schema": "edgectl/v9/nothing", "data": {}},
    ],
)
def test_describe_never_raises_on_an_odd_message(message: dict[str, object]) -> None:
    assert describe("edgectl/v1/S-1/evt/x", message)


def test_describe_a_completed_order() -> None:
    sale = {"sale_id": 412, "pump": 3, "nozzle": 2, "grade": "95", "volume": "26.39"}
    sale |= {"amount": "200.00", "currency": "CNY", "unit_price": "7.58"}
    message = {
        "schema": "edgectl/v1/order",
        "ts": "2026-11-24T10:24:51.300Z",
        "data": {"order_id": "o-1", "pump": 3, "status": "completed", "sale": sale},
    }
    assert describe("t", message) == (
        "10:24:51.300 order      order o-1 pump 3: completed -- sale 412: pump 3 nozzle 2 "
        "grade 95, 26.39 L, 200.00 CNY at 7.58"
    )


def test_the_station_and_its_cli_never_import_the_backends_database_driver() -> None:
    """psycopg is the backend's optional extra: a station without it must run, and so must
    every station command (`edgectl --help` builds every parser, `ingest` included)."""
    code = (
        "import sys\n"
        "import edgectl.daemon\n"
        "from edgectl.cli.main import build_parser\n"
        "build_parser()\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'jsonschema'))\n"
        "assert not leaked, leaked\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
