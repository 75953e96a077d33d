"""The control socket against the real daemon on simulated pumps: its wire protocol, its
permissions, and that no client, however broken, can hurt the daemon."""

from __future__ import annotations

import asyncio
import fcntl
import grp
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edgectl.config import DEFAULT_CONTROL_SOCKET, load_config
from edgectl.control import protocol
from edgectl.store.store import lock_path
from tests.control.clikit import ROOT, acli, control_config, short_dir
from tests.stationkit import RunningStation, running_station, until


@pytest.fixture
async def station() -> AsyncIterator[RunningStation]:
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock", mode="attendant")
        async with running_station(config) as running:
            await until(lambda: (tmp / "control.sock").exists(), what="the control socket")
            yield running


class Client:
    """A raw JSON-lines client, to say exactly what a test wants on the wire."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            line = await self.reader.readline()
        assert line, "the server closed the connection"
        message: dict[str, Any] = json.loads(line)
        return message

    async def call(self, op: str, args: dict[str, Any] | None = None, id: int = 1) -> Any:
        await self.send(protocol.encode_request(id, op, args or {}))
        return await self.receive()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def socket_path(station: RunningStation) -> Path:
    return station.config.control.socket


async def test_socket_is_owner_and_group_only(station: RunningStation) -> None:
    mode = os.stat(socket_path(station)).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def test_the_shipped_unit_and_example_config_agree_on_the_socket() -> None:
    """systemd makes /run/edgectl for the socket, and the daemon runs in the socket's group."""
    unit = (ROOT / "systemd" / "edgectl.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["RuntimeDirectory"] == "edgectl"
    assert "dialout" in settings["SupplementaryGroups"].split()  # the serial ports
    example = load_config(ROOT / "config" / "station.example.toml")
    assert example.control.socket == DEFAULT_CONTROL_SOCKET
    assert example.control.socket.parent == Path("/run") / settings["RuntimeDirectory"]
    assert example.control.group == settings["Group"] == settings["User"]


async def test_socket_takes_the_configured_group() -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    with short_dir() as tmp:
        path = tmp / "control.sock"
        async with running_station(control_config(tmp, path, group=group)):
            await until(path.exists, what="the control socket")
            assert os.stat(path).st_gid == grp.getgrnam(group).gr_gid
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


async def test_request_answer_shape_and_ids(station: RunningStation) -> None:
    client = await Client.connect(socket_path(station))
    reply = await client.call("pumps", id=7)
    assert reply["id"] == 7 and reply["ok"] is True
    assert [p["pump"] for p in reply["result"]] == [1, 2]
    reply = await client.call("status", id="s-1")
    assert reply["id"] == "s-1" and reply["result"]["daemon"]["station"] == "TEST-01"
    await client.close()


async def test_bad_requests_get_errors_and_the_connection_stays_usable(
    station: RunningStation,
) -> None:
    client = await Client.connect(socket_path(station))
    await client.send(b"this is not json\n")
    reply = await client.receive()
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"

    reply = await client.call("launch_rockets", id=2)
    assert reply["id"] == 2 and reply["error"]["code"] == "unknown_op"
    assert "known:" in reply["error"]["message"]

    reply = await client.call("authorize", {"pump": "three"}, id=3)
    assert reply["error"]["code"] == "invalid_args"

    reply = await client.call("authorize", {"pump": 42}, id=4)
    assert reply["error"]["code"] == "unknown_pump"

    await client.send(b'[1, 2, 3]\n{"id": 5, "op": "pumps", "args": []}\n')
    assert (await client.receive())["error"]["code"] == "bad_request"
    assert (await client.receive())["error"]["code"] == "invalid_args"

    reply = await client.call("pumps", id=6)
    assert reply["ok"] is True
    await client.close()


async def test_a_huge_line_closes_only_that_connection(station: RunningStation) -> None:
    other = await Client.connect(socket_path(station))
    flood = await Client.connect(socket_path(station))
    await flood.send(b"x" * (protocol.MAX_LINE + 10))
    reply = await flood.receive()
    assert reply["error"]["code"] == "bad_request"
    async with asyncio.timeout(5):
        assert await flood.reader.read() == b""  # closed by the server
    assert (await other.call("pumps"))["ok"] is True
    await other.close()
    await flood.close()


async def test_clients_that_vanish_or_stall_do_not_hurt_the_daemon(
    station: RunningStation,
) -> None:
    path = socket_path(station)
    # Connect and vanish, half a request, a request then an immediate hang-up.
    for data in (b"", b'{"id": 1, "op": "pu', b'{"id": 1, "op": "status"}\n'):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(path))
        raw.sendall(data)
        raw.close()
    # A client that subscribes to a busy stream and never reads.
    stalled = await Client.connect(path)
    await stalled.call("sniff", {"line": "l0"})
    await asyncio.sleep(0.5)
    client = await Client.connect(path)
    assert (await client.call("pumps"))["ok"] is True
    await station.all_online()
    await stalled.close()
    await client.close()


async def test_sniff_subscription_ends_with_the_client(station: RunningStation) -> None:
    line: Any = station.daemon.lines["l0"]
    client = await Client.connect(socket_path(station))
    reply = await client.call("sniff", {"line": "l0"}, id=9)
    port = station.config.line("l0").port
    assert reply["result"] == {"line": "l0", "port": port, "protocol": "wayne_dart"}
    event = await client.receive()
    assert event["id"] == 9 and event["event"]["direction"] in ("tx", "rx")
    assert len(line.taps) == 1
    await client.close()
    await until(lambda: not line.taps, what="the sniff tap removed")


async def test_sniff_refuses_an_unknown_line(station: RunningStation) -> None:
    client = await Client.connect(socket_path(station))
    reply = await client.call("sniff", {"line": "nowhere"})
    assert reply["error"]["code"] == "unknown_line" and "l0" in reply["error"]["message"]
    assert (await client.call("pumps"))["ok"] is True  # still a usable connection
    await client.close()


async def test_streams_end_with_a_reason_when_the_daemon_stops(station: RunningStation) -> None:
    client = await Client.connect(socket_path(station))
    reply = await client.call("watch", {"interval": 0.1}, id=3)
    assert reply["result"]["interval"] == 0.1
    update = await client.receive()
    assert [p["pump"] for p in update["event"]["pumps"]] == [1, 2]
    await station.stop()
    last: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while line := await client.reader.readline():
            last = json.loads(line)
    assert last == {"id": 3, "end": "the daemon is stopping"}
    await client.close()


async def test_socket_and_store_lock_released_at_stop(station: RunningStation) -> None:
    path = socket_path(station)
    lock = lock_path(station.config.store.path)
    assert lock.exists()
    await station.stop()
    assert not path.exists()
    with lock.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


async def test_a_stale_socket_file_is_replaced() -> None:
    with short_dir() as tmp:
        path = tmp / "control.sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()  # the file stays, nobody listens: a daemon that was killed
        config = control_config(tmp, path)
        async with running_station(config):
            client = await Client.connect(path)
            assert (await client.call("pumps"))["ok"] is True
            await client.close()


async def test_a_live_socket_is_not_taken_over_and_the_station_still_runs() -> None:
    with short_dir() as tmp:
        path = tmp / "control.sock"
        squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        squatter.bind(str(path))
        squatter.listen(1)
        inode = os.stat(path).st_ino
        try:
            config = control_config(tmp, path)
            async with running_station(config) as station:
                await station.all_online()  # selling goes on without the control socket
                await asyncio.sleep(0.2)
                assert path.exists()
                assert os.stat(path).st_ino == inode
        finally:
            squatter.close()


TANK = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"

[[tanks]]
number = 7
name = "92 underground"
grade = "92"
capacity_l = 20000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
chart = [[0, 0], [1250, 10000], [2500, 20000]]
"""


async def test_tanks_of_the_station() -> None:
    with short_dir() as tmp:
        path = tmp / "control.sock"
        # The console is not there: the tank is configured, its gauge stays unreachable.
        config = control_config(tmp, path, extra=TANK.format(port=tmp / "tls"))
        async with running_station(config):
            await until(path.exists, what="the control socket")
            client = await Client.connect(path)
            [tank] = (await client.call("tanks"))["result"]
            assert (tank["tank"], tank["gauge"], tank["reading_at"]) == (7, "tls", None)
            status = (await client.call("status"))["result"]
            assert len(status["tanks"]) == 1
            await client.close()
            result = await acli("tanks", "--socket", str(path))
            assert result.code == 0 and "92 underground" in result.out


async def test_no_tanks_configured(station: RunningStation) -> None:
    result = await acli("tanks", "--socket", str(socket_path(station)))
    assert result.code == 0 and result.out == "no tanks configured\n"


PROBES = """
[[gauges]]
name = "probes"
protocol = "modbus_probe"
host = "127.0.0.1"
tcp_port = {port}
register_map = "{map}"
poll_interval_s = 0.5
reply_timeout_ms = 300

[[tanks]]
number = 3
grade = "95"
capacity_l = 30000
height_mm = 2500
density_15 = "745.0"
gauge = "probes"
device_id = 1
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]
"""


async def test_a_modbus_probe_bus_in_tanks_and_status() -> None:
    from drivers.modbus_probe.registers import load_register_map
    from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe
    from drivers.tank_sim import SimTank, TankChart, TankSpec

    register_map = ROOT / "config" / "modbus" / "generic_magnetostrictive.toml"
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 745.0)
    sim = ModbusProbeSimulator(
        [sim_probe(1, load_register_map(register_map), SimTank(spec, product_l=12000))]
    )
    _host, port = sim.serve_tcp()
    try:
        with short_dir() as tmp:
            path = tmp / "control.sock"
            extra = PROBES.format(port=port, map=register_map)
            async with running_station(control_config(tmp, path, extra=extra)):
                await until(path.exists, what="the control socket")
                client = await Client.connect(path)

                async def status() -> dict[str, Any]:
                    reply = await client.call("status")
                    assert reply["ok"] is True
                    result: dict[str, Any] = reply["result"]
                    return result

                async def ready() -> bool:
                    found = await status()
                    line = found["lines"][-1]
                    return bool(line["per_minute"]) and found["tanks"][0]["reading_at"] is not None

                async with asyncio.timeout(15):
                    while not await ready():
                        await asyncio.sleep(0.2)
                found = await status()
                line = found["lines"][-1]
                assert (line["line"], line["kind"], line["protocol"]) == (
                    "probes",
                    "gauge",
                    "modbus_probe",
                )
                assert (line["port"], line["settings"]) == (f"127.0.0.1:{port}", "tcp")
                assert line["gauge_online"] is True and (line["tanks"], line["online"]) == (1, 1)
                assert line["counters"]["requests"] > 0 and line["per_minute"]["frames"] > 0
                assert line["per_minute"]["retransmissions"] is None  # Modbus does not count them
                [tank] = (await client.call("tanks"))["result"]
                assert (tank["tank"], tank["gauge"], tank["online"]) == (3, "probes", True)
                assert abs(Decimal(tank["product_l"]) - 12000) < 50
                await client.close()
    finally:
        sim.stop()


PROBE_LINE = """
[[gauges]]
name = "probes"
protocol = "modbus_probe"
port = "{port}"
register_map = "{map}"
poll_interval_s = 0.5
reply_timeout_ms = 300

[[tanks]]
number = 3
grade = "95"
capacity_l = 30000
height_mm = 2500
density_15 = "745.0"
gauge = "probes"
device_id = 1
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]

[[tanks]]
number = 4
grade = "diesel"
capacity_l = 30000
height_mm = 2500
density_15 = "840.0"
gauge = "probes"
device_id = 2
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]
"""
SNIFF_KEYS = {
    "at",
    "gap_ms",
    "direction",
    "from",
    "hex",
    "type",
    "valid",
    "address",
    "seq",
    "crc",
    "summary",
    "frame",
    "dropped",
}


async def test_sniff_a_modbus_probe_line() -> None:
    """Two probes on an RS-485 line (RTU on a pty): frames with hex and CRC verdicts, a reply
    whose CRC the line spoiled, and --address for one device."""
    from drivers.modbus_probe import adu
    from drivers.modbus_probe.registers import load_register_map
    from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe
    from drivers.tank_sim import SimTank, TankChart, TankSpec

    register_map = ROOT / "config" / "modbus" / "generic_magnetostrictive.toml"
    rmap = load_register_map(register_map)
    chart = TankChart.from_points([(0, 0), (2500, 30000)])
    sim = ModbusProbeSimulator(
        [
            sim_probe(n, rmap, SimTank(TankSpec(n, chart, "gasoline", 745.0), product_l=9000))
            for n in (1, 2)
        ]
    )
    with short_dir() as tmp:
        sim.serve_pty(tmp / "probes")
        path = tmp / "control.sock"
        extra = PROBE_LINE.format(port=tmp / "probes", map=register_map)
        try:
            async with running_station(control_config(tmp, path, extra=extra)):
                await until(path.exists, what="the control socket")
                client = await Client.connect(path)
                reply = await client.call("sniff", {"line": "probes", "address": 2}, id=4)
                assert reply["result"] == {
                    "line": "probes",
                    "port": str(tmp / "probes"),
                    "protocol": "modbus_probe",
                }
                events = [(await client.receive())["event"] for _ in range(4)]
                await client.close()
                for event in events:
                    assert set(event) == SNIFF_KEYS and event["address"] == 2
                    assert event["crc"] == "ok" and event["valid"] is True
                    wire = bytes.fromhex(event["hex"])
                    assert adu.with_crc(wire[:-2]) == wire and wire[0] == 2
                    assert event["type"] == "READ_INPUT" and event["seq"] is None
                asked = next(e for e in events if e["direction"] == "tx")
                last = rmap.tank_address(1) + rmap.block_length - 1
                assert asked["from"] == "controller"
                assert (
                    asked["summary"]
                    == f"read input registers {rmap.tank_address(1)}..{last} from 2"
                )
                answer = next(e for e in events if e["direction"] == "rx")
                assert answer["from"] == "device"
                assert answer["summary"] == f"{rmap.block_length} input registers from 2"
                assert answer["frame"]["function_code"] == 4

                # Every device: a reply spoiled on the line shows as it came, CRC BAD.
                client = await Client.connect(path)
                await client.call("sniff", {"line": "probes"})
                sim.corrupt_next_reply()
                seen: list[dict[str, Any]] = []
                async with asyncio.timeout(15):
                    while not any(e["crc"] == "bad" for e in seen):
                        seen.append((await client.receive())["event"])
                await client.close()
                assert {e["address"] for e in seen} <= {1, 2}
                bad = seen[-1]
                assert (bad["direction"], bad["valid"], bad["type"]) == ("rx", False, "READ_INPUT")
                assert bad["summary"].startswith("CRC mismatch: computed ")
                wire = bytes.fromhex(bad["hex"])
                assert adu.with_crc(wire[:-2])[:-1] == wire[:-1] != adu.with_crc(wire[:-2])

                result = await acli("sniff", "probes", "--count", "2", "--socket", str(path))
                assert result.code == 0, result.err
                lines = result.out.splitlines()
                assert len(lines) == 2 and "CRC ok" in result.out
                assert any("ctl>" in line and "read input registers" in line for line in lines)
                result = await acli("sniff", "probes", "--address", "250", "--socket", str(path))
                # An id no probe of the line has: the ids it has, in the line's notation.
                assert result.code == 1 and result.err == (
                    "edgectl sniff: probes has nothing at address 250 (its addresses: 1, 2)\n"
                )
        finally:
            sim.stop()
