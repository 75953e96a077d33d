"""`edgectl probe --protocol ifsf` and `edgectl scan --protocol ifsf` end to end: the CLI as a
child process listens while dispenser nodes of the node layer on loopback send it unicast
heartbeats; the table, --json, the config snippet (read back with tomllib), nothing heard,
and the usage errors."""

from __future__ import annotations

import socket
import tomllib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers import registry
from drivers.ifsf.dispenser import FpState
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import IfsfNode
from drivers.ifsf.sim import IfsfSimulator
from tests.control.clikit import Result, acli, cli
from tests.drivers.ifsf.loopback import free_udp_port, loopback_settings

pytestmark = pytest.mark.slow

LISTEN_S = "1.5"
D = Decimal


@asynccontextmanager
async def dispensers(port: int, lnas: Sequence[Lna], status: int = 0) -> AsyncIterator[None]:
    nodes = [IfsfNode(loopback_settings([lna], 0, port, heartbeat_interval_s=0.1)) for lna in lnas]
    for node in nodes:
        node.set_status(node.lnas[0], status)
        await node.start()
    try:
        yield
    finally:
        for node in nodes:
            await node.stop()


async def probe_heard(*extra: str, status: int = 0, command: str = "probe") -> Result:
    port = free_udp_port()
    async with dispensers(port, [Lna(1, 2), Lna(1, 1)], status):
        return await acli(
            command,
            "--protocol",
            "ifsf",
            "--heartbeat-port",
            str(port),
            "--seconds",
            LISTEN_S,
            *extra,
        )


def snippet(out: str) -> dict[str, Any]:
    """The TOML after the table: from the snippet's first comment line on."""
    start = out.index("# IFSF nodes heard")
    return tomllib.loads(out[start:])


async def test_probe_lists_the_nodes_heard_and_their_config() -> None:
    result = await probe_heard(status=0x01)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split()[:3] == ["LNA", "role", "IP"]
    rows = [line.split() for line in lines if line.startswith("1.")]
    assert [row[:3] for row in rows] == [
        ["1.1", "dispenser", "127.0.0.1"],
        ["1.2", "dispenser", "127.0.0.1"],
    ]
    assert all("01" in row and "configuration" in row for row in rows)
    assert "2 IFSF node(s) heard on UDP" in result.out
    assert "listening for IFSF heartbeats on UDP" in result.err
    config = snippet(result.out)
    assert [p["node"] for p in config["pumps"]] == ["1.1", "1.2"]
    assert config["lines"][0]["heartbeat_to"] == ["127.0.0.1"]


async def test_probe_json_has_every_node_and_the_config() -> None:
    result = await probe_heard("--json", "--profile", "sinopec")
    assert result.code == 0, result.err
    body = result.json()
    assert body["protocol"] == "ifsf" and body["listened"]["seconds"] >= 1.4
    assert [n["lna"] for n in body["found"]] == ["1.1", "1.2"]
    first = body["found"][0]
    assert first["role"] == "dispenser" and first["ip"] == "127.0.0.1"
    assert first["status"] == 0 and first["status_flags"] == [] and first["heartbeats"] >= 2
    assert body["garbage"] == {"count": 0, "from": {}}
    config = tomllib.loads(body["config"])
    assert config["lines"][0]["profile"] == "sinopec"
    assert [p["number"] for p in config["pumps"]] == [1, 2]


async def test_scan_listens_as_probe_does() -> None:
    result = await probe_heard("--json", command="scan")
    assert result.code == 0, result.err
    assert [n["lna"] for n in result.json()["found"]] == ["1.1", "1.2"]


async def test_scan_asked_twice_for_ifsf_listens_once() -> None:
    result = await probe_heard("--json", "--protocol", "ifsf", command="scan")
    assert result.code == 0, result.err
    assert [n["lna"] for n in result.json()["found"]] == ["1.1", "1.2"]  # one JSON document


async def test_probe_beside_a_daemon_holding_the_heartbeat_port() -> None:
    """A controller node of the node layer holds the port, as the daemon does (here bound to
    127.0.0.1, where the unicast heartbeats go): the probe listens beside it, hears the
    dispensers, and says the port is shared."""
    port = free_udp_port()
    daemon = IfsfNode(loopback_settings([Lna(2, 1)], port, free_udp_port(), send_heartbeat=False))
    assert daemon.settings.heartbeat_host == "127.0.0.1"
    async with daemon, dispensers(port, [Lna(1, 1)]):
        result = await acli(
            "probe", "--protocol", "ifsf", "--heartbeat-port", str(port), "--seconds", LISTEN_S
        )
    assert result.code == 0, result.err
    assert f"note: UDP {port} is bound by another process too" in result.err
    assert [p["node"] for p in snippet(result.out)["pumps"]] == ["1.1"]


def test_nothing_heard_exits_1_with_the_hint() -> None:
    port = str(free_udp_port())
    result = cli("probe", "--protocol", "ifsf", "--heartbeat-port", port, "--seconds", "0.3")
    assert result.code == 1
    assert f"no IFSF heartbeat heard on UDP {port} in 0.3 s" in result.err
    assert "--profile petrochina" in result.err  # its port, 3485, was not listened on
    assert "broadcasts reach this host" in result.err and "CD/FS IP" in result.err
    assert result.out == ""


def test_nothing_heard_with_json_still_says_why() -> None:
    port = str(free_udp_port())
    result = cli(
        "scan", "--protocol", "ifsf", "--heartbeat-port", port, "--seconds", "0.3", "--json"
    )
    assert result.code == 1
    assert result.json()["found"] == [] and "no IFSF heartbeat heard" in result.err


def test_a_port_held_by_a_process_that_does_not_share_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        port = str(holder.getsockname()[1])
        result = cli("probe", "--protocol", "ifsf", "--heartbeat-port", port, "--seconds", "0.2")
    assert result.code == 1
    assert f"cannot listen on UDP port {port}" in result.err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["probe", "/dev/ttyUSB0", "--protocol", "ifsf"],
            "takes no serial port: drop /dev/ttyUSB0",
        ),
        (["probe", "--protocol", "dart"], "--protocol dart needs the serial PORT"),
        (["probe", "--protocol", "ifsf", "--baud", "9600"], "--baud is for serial protocols"),
        (["probe", "--protocol", "ifsf", "--timeout-ms", "50"], "--timeout-ms is for serial"),
        (
            ["probe", "/dev/null", "--protocol", "tls", "--seconds", "3"],
            "--seconds is for listening",
        ),
        (["probe", "--protocol", "ifsf", "--seconds", "0"], "is not a time in seconds"),
        (["probe", "--protocol", "ifsf", "--heartbeat-port", "70000"], "is not a UDP port"),
        (["probe", "--protocol", "ifsf", "--profile", "shell"], "invalid choice"),
        (["scan"], "give the serial PORT to scan, or --protocol ifsf"),
        (["scan", "/dev/null", "--protocol", "ifsf"], "scan it alone"),
        (
            ["scan", "--protocol", "ifsf", "--protocol", "dart"],
            "--protocol dart needs the serial PORT",
        ),
        (["scan", "--protocol", "ifsf", "--first"], "--first is for serial protocols"),
        (["scan", "/dev/null", "--profile", "generic"], "--profile is for listening"),
    ],
)
def test_usage_errors(argv: list[str], said: str) -> None:
    result = cli(*argv)
    assert result.code == 2, result.err
    assert said in result.err


def test_help_shows_the_listening_options_and_an_example() -> None:
    result = cli("probe", "--help")
    assert result.code == 0
    assert "--heartbeat-port" in result.out and "--profile" in result.out
    assert "edgectl probe --protocol ifsf" in result.out
    assert "IFSF dispensers on TCP/IP" in result.out


# ------------------------------------------------------------------ --read


MINIMAL_STATION = """\
[station]
id = "PROBED"
currency = "CNY"

[store]
path = "{tmp}/edgectl.db"
"""


@asynccontextmanager
async def simulated_dispenser(probe_port: int) -> AsyncIterator[tuple[IfsfSimulator, int]]:
    """Node 1.1 of the IFSF simulator: FP 1 with logical nozzles 1 (Prod_Nb 1 at 7.45) and
    2 (Prod_Nb 2 at 7.93), FP 2 with nozzle 1 (Prod_Nb 2). It beats to the probe's port and
    hears controllers on a port of its own (returned)."""
    own = free_udp_port()
    plan = registry.NetworkPlan(
        name="probed",
        nodes=(
            registry.NodePlan(
                node=1,
                pumps=(
                    registry.PumpPlan(number=1, address=1, prices={1: D("7.45"), 2: D("7.93")}),
                    registry.PumpPlan(number=2, address=2, prices={1: D("7.93")}),
                ),
                products={(1, 1): 1, (1, 2): 2, (2, 1): 2},
            ),
        ),
        heartbeat_port=own,
        heartbeat_destinations=(("127.0.0.1", probe_port),),
        heartbeat_interval_s=0.2,
    )
    network = registry.dispenser_simulation("ifsf").network
    assert network is not None
    sim = network(plan)
    assert isinstance(sim, IfsfSimulator)
    async with sim:
        yield sim, own


async def test_probe_read_prints_a_snippet_config_check_accepts_as_it_is(tmp_path: Path) -> None:
    port = free_udp_port()
    async with simulated_dispenser(port) as (sim, own):
        result = await acli(
            "probe",
            "--protocol",
            "ifsf",
            "--heartbeat-port",
            str(port),
            "--seconds",
            LISTEN_S,
            "--read",
            "--heartbeat-to",
            f"127.0.0.1:{own}",
            timeout=60,
        )
        # Only reads were sent: the node was not configured, opened or written to.
        node = sim.nodes[0].model
        assert [fp.state for fp in node.fps.values()] == [FpState.CLOSED, FpState.CLOSED]
        assert node.recipients == []
    assert result.code == 0, result.err
    assert "reading the dispensers heard, as controller 2.127" in result.err
    assert "not complete" not in result.err and "FILL IN" not in result.out
    config = snippet(result.out)
    assert [(p["node"], p["fp"], p["nozzles"]) for p in config["pumps"]] == [
        ("1.1", 1, {"1": "1", "2": "2"}),
        ("1.1", 2, {"1": "2"}),
    ]
    # Where the node was heard, its advertised TCP port included, pinned on each of its FPs.
    heard = f"127.0.0.1:{sim.nodes[0].tcp_port}"
    assert [p["host"] for p in config["pumps"]] == [heard, heard]
    assert config["lines"][0]["products"] == {"1": 1, "2": 2}
    assert [(g["id"], g["unit_price"]) for g in config["grades"]] == [("1", "7.45"), ("2", "7.93")]
    assert "rename an id to the" in result.out

    station = tmp_path / "station.toml"
    text = MINIMAL_STATION.format(tmp=tmp_path) + "\n" + result.out[result.out.index("# IFSF") :]
    station.write_text(text, encoding="utf-8")
    checked = await acli("config", "check", str(station))
    assert checked.code == 0, checked.err + checked.out + text
    assert f"node 1.1 at {heard}: pumps 1, 2" in checked.out  # config check shows the host


async def test_probe_without_read_says_what_to_fill_in() -> None:
    result = await probe_heard()
    assert result.code == 0, result.err
    assert "note: the config snippet is not complete: fill in products" in result.err
    assert "(or probe again with --read)" in result.err
    assert "# FILL IN before `edgectl config check` passes" in result.out
