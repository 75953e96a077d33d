"""The simulated TLS console: its answers from a tank model, and its wire (TCP and pty)."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root import codec
from drivers.veeder_root.codec import (
    AlarmStatus,
    ClockReply,
    Command,
    DeliveryReport,
    DisplayInventory,
    DisplayReport,
    Inventory,
    Malformed,
    Reply,
    SystemStatus,
    Unsupported,
)
from drivers.veeder_root.sim import (
    DISPLAY_ONLY,
    REFUSE_INVENTORY,
    TankState,
    TlsConsole,
    TlsConsoleSimulator,
)
from tests.drivers.veeder_root.frames import FakeDelivery, FakeTanks

NOW = datetime(2024, 1, 15, 12, 30, 45)
STAMP = NOW.replace(second=0)  # replies carry minutes


def _console(tanks: TankState | None = None, **kwargs: object) -> TlsConsole:
    return TlsConsole(tanks or FakeTanks.two(), wall=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def _ask(console: TlsConsole, code: str, data: str = "") -> Reply | None:
    return console.respond(Command(code, data, console.security_code))


# --------------------------------------------------------------------------- answers
def test_inventory_from_the_model() -> None:
    tanks = FakeTanks.two()
    tanks.tank(1).change(delivery_in_progress=True)
    reply = _ask(_console(tanks), "i20100")
    assert isinstance(reply, Inventory) and reply.tank == 0 and reply.at == STAMP
    one, two = reply.tanks
    assert (one.tank, one.product, one.status) == (1, "1", codec.STATUS_DELIVERY_IN_PROGRESS)
    assert (one.volume, one.tc_volume, one.ullage) == (
        Decimal(20000),
        Decimal("19850.5"),
        Decimal(9000),
    )
    assert (one.height, one.water, one.temperature, one.water_volume) == (
        Decimal(1200),
        Decimal("12.5"),
        Decimal("18.25"),
        Decimal(40),
    )
    assert all(isinstance(v, Decimal) for v in one.floats)
    assert two.volume == 7500 and two.status == 0


def test_one_tank_or_none() -> None:
    console = _console(products={2: "D"})
    reply = _ask(console, "i20102")
    assert isinstance(reply, Inventory) and [(t.tank, t.product) for t in reply.tanks] == [(2, "D")]
    empty = _ask(console, "i20109")
    assert isinstance(empty, Inventory) and empty.tanks == ()


def test_the_model_is_read_on_every_command() -> None:
    tanks = FakeTanks.two()
    console = _console(tanks)
    tanks.tank(1).change(volume_l=19000.0)
    reply = _ask(console, "i20101")
    assert isinstance(reply, Inventory) and reply.tanks[0].volume == 19000


@pytest.mark.parametrize("line_end", ["\r\n", "\n"])
def test_printed_inventory_report(line_end: str) -> None:
    console = _console(products={1: "UNLEADED 95"}, display_line_end=line_end, header=("A", "B"))
    reply = _ask(console, "I20100")
    assert isinstance(reply, DisplayReport) and reply.code == "I20100"
    assert line_end in reply.text and ("\r\n" in reply.text) is (line_end == "\r\n")
    report = codec.parse_display_inventory(reply.text)
    assert isinstance(report, DisplayInventory)
    assert report.printed_at == STAMP
    assert [(t.tank, t.product, t.volume) for t in report.tanks] == [
        (1, "UNLEADED 95", Decimal(20000)),
        (2, "2", Decimal(7500)),
    ]


def test_deliveries_in_console_local_time_last_ten_kept() -> None:
    tanks = FakeTanks.two()
    start = datetime(2024, 1, 1, 6, 0, tzinfo=UTC)
    for day in range(12):
        begin = start + timedelta(days=day)
        tanks.tank(1).deliveries.append(FakeDelivery(1, begin, begin + timedelta(minutes=40)))
    console = _console(tanks, timezone=timezone(timedelta(hours=2)))
    reply = _ask(console, "i20200")
    assert isinstance(reply, DeliveryReport)
    one, two = reply.tanks
    assert len(one.deliveries) == 10 and two.deliveries == ()
    first = one.deliveries[0]
    assert first.start == datetime(2024, 1, 3, 8, 0)  # day 3, UTC+2, naive
    assert first.end == datetime(2024, 1, 3, 8, 40)
    assert (first.start_volume, first.end_volume) == (Decimal(5000), Decimal(15000))
    assert (first.start_height, first.end_height, first.end_temperature) == (
        Decimal(500),
        Decimal(1100),
        Decimal(16),
    )


def test_alarms_from_the_model_and_the_console() -> None:
    tanks = FakeTanks.two()
    tanks.tank(1).change(alarms=frozenset({"overfill", "high_water", "something_else"}))
    console = _console(tanks)
    console.set_console_alarms(2, [11, 25])
    reply = _ask(console, "i20500")
    assert isinstance(reply, AlarmStatus)
    assert [(t.tank, t.codes) for t in reply.tanks] == [(1, (3, 4)), (2, (5, 11, 25))]


def test_status_and_clock() -> None:
    console = _console(system_status="00000000")
    assert _ask(console, "i10100") == SystemStatus("i10100", STAMP, "00000000")
    assert _ask(console, "i50100") == ClockReply("i50100", STAMP)
    wanted = datetime(2031, 3, 4, 5, 6)
    assert _ask(console, "s50100", "3103040506") == ClockReply("s50100", wanted)
    assert console.now() == wanted  # the console keeps the new time from now on
    assert _ask(console, "s50100", "31130405") == Unsupported()


# 'i2020³', 'i201٣٣': line noise in the tank number (issue 9) is refused, not a crash.
@pytest.mark.parametrize("code", ["i99900", "i201XX", "x", "S00100", "i2020³", "i201٣٣"])
def test_unknown_commands_are_refused(code: str) -> None:
    assert _ask(_console(), code) == Unsupported()


def test_refused_families() -> None:
    console = _console(refuse={"i201"})
    assert _ask(console, "i20100") == Unsupported()
    assert isinstance(_ask(console, "I20100"), DisplayReport)


def test_display_only_and_refusing_every_inventory_command() -> None:
    console = _console()
    console.set_refused(DISPLAY_ONLY)
    assert _ask(console, "i20100") == Unsupported()
    assert isinstance(_ask(console, "I20100"), DisplayReport)
    console.set_refused(REFUSE_INVENTORY)
    assert _ask(console, "i20100") == Unsupported() == _ask(console, "I20100")
    assert not isinstance(_ask(console, "i20500"), Unsupported)  # the rest is answered
    console.set_refused(())
    assert isinstance(_ask(console, "i20100"), Inventory)


def test_a_probe_out_leaves_its_tank_out_of_the_inventory() -> None:
    console = _console()
    console.set_probe_out(2)
    inventory = _ask(console, "i20100")
    assert isinstance(inventory, Inventory) and [t.tank for t in inventory.tanks] == [1]
    report = _ask(console, "I20100")
    assert isinstance(report, DisplayReport)
    parsed = codec.parse_display_inventory(report.text)
    assert not isinstance(parsed, Malformed) and [t.tank for t in parsed.tanks] == [1]
    only = _ask(console, "i20102")
    assert isinstance(only, Inventory) and only.tanks == ()
    console.set_probe_out(2, False)
    again = _ask(console, "i20100")
    assert isinstance(again, Inventory) and [t.tank for t in again.tanks] == [1, 2]


def test_security_code() -> None:
    console = _console(security_code="S3CRET")
    assert console.respond(Command("i20100", "", None)) is None
    assert console.respond(Command("i20100", "", "WRONG1")) is None
    assert isinstance(console.respond(Command("i20100", "", "S3CRET")), Inventory)
    with pytest.raises(ValueError):
        _console(security_code="short")


# --------------------------------------------------------------------------- the shared physics
class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_driven_by_the_shared_tank_model() -> None:
    clock = ManualClock()
    wall = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    chart = TankChart.horizontal_cylinder(2500, 8000)
    tank = SimTank(TankSpec(1, chart), product_l=20000, water_l=50, clock=clock, wall=lambda: wall)
    farm = TankFarm([tank])
    console = _console(farm, timezone=UTC)

    def inventory() -> codec.TankInventory:
        reply = _ask(console, "i20101")
        assert isinstance(reply, Inventory)
        return reply.tanks[0]

    before = inventory()
    assert before.volume == 20000 and before.water_volume == 50
    farm.draw(1, 120)  # a simulated pump sells
    after = inventory()
    assert after.volume == 19880 and after.height is not None and before.height is not None
    assert after.height < before.height
    tank.deliver(5000, duration_s=600)
    clock.now += 300
    assert inventory().delivery_in_progress
    clock.now += 400
    assert not inventory().delivery_in_progress
    reply = _ask(console, "i20201")
    assert isinstance(reply, DeliveryReport)
    (record,) = reply.tanks[0].deliveries
    assert record.start == datetime(2024, 1, 15, 10, 0)
    assert record.start_volume == 19880 and record.end_volume == 24880


# --------------------------------------------------------------------------- the wire
def _recv_reply(sock: socket.socket, etx: int = codec.ETX) -> bytes:
    data = b""
    while not data.endswith(bytes((etx,))):
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    return data


def _silent(sock: socket.socket, seconds: float = 0.1) -> bool:
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


@pytest.fixture
def tcp_sim() -> Iterator[tuple[TlsConsoleSimulator, tuple[str, int]]]:
    sim = TlsConsoleSimulator(_console())
    address = sim.serve_tcp()
    yield sim, address
    sim.stop()


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    sock.settimeout(5)
    return sock


def test_tcp_answers_several_clients(tcp_sim: tuple[TlsConsoleSimulator, tuple[str, int]]) -> None:
    sim, address = tcp_sim
    with _connect(address) as first, _connect(address) as second:
        first.sendall(b"\x01i20100")
        second.sendall(b"\x01i50100")
        assert isinstance(codec.decode(_recv_reply(first))[1], Inventory)
        assert codec.decode(_recv_reply(second))[1] == ClockReply("i50100", STAMP)
        first.sendall(b"\x01i99900")
        assert _recv_reply(first) == b"\x019999FF1B\x03"
    stats = sim.stats
    assert stats.connections == 2 and stats.commands == 3 and stats.refused == 1


def test_tcp_faults(tcp_sim: tuple[TlsConsoleSimulator, tuple[str, int]]) -> None:
    sim, address = tcp_sim
    with _connect(address) as sock:
        sim.drop_next_replies()
        sock.sendall(b"\x01i20100")
        assert _silent(sock)
        sim.corrupt_next_reply()
        sock.sendall(b"\x01i20100")
        item = codec.decode(_recv_reply(sock))[1]
        assert isinstance(item, Malformed) and item.kind == "bad_checksum"
        sim.inject_garbage(b"xyz")
        sock.sendall(b"\x01i50100")
        assert _recv_reply(sock).startswith(b"xyz\x01i50100")
        sim.withhold_etx()
        sock.sendall(b"\x01i50100")
        time.sleep(0.1)
        partial = sock.recv(4096)
        assert partial.startswith(b"\x01i50100") and not partial.endswith(b"\x03")
        sock.sendall(b"\x1b")
        sim.set_online(False)
        sock.sendall(b"\x01i20100")
        assert _silent(sock)
        sim.set_online(True)
        sock.sendall(b"\x01i20100")
        assert isinstance(codec.decode(_recv_reply(sock))[1], Inventory)
    stats = sim.stats
    assert stats.replies_dropped == 1 and stats.replies_corrupted == 1 and stats.aborts == 1
    assert stats.garbage_bytes == 1


def test_tcp_drop_connections(tcp_sim: tuple[TlsConsoleSimulator, tuple[str, int]]) -> None:
    sim, address = tcp_sim
    with _connect(address) as sock:
        sock.sendall(b"\x01i50100")
        _recv_reply(sock)
        sim.drop_connections()
        assert sock.recv(4096) == b""


def test_pty_with_terminator_security_code_and_etx(tmp_path: Path) -> None:
    console = _console(security_code="S3CRET")
    sim = TlsConsoleSimulator(console, terminator=b"\r\n", etx=0x04, chunk_size=5)
    link = tmp_path / "tls"
    with sim:
        pty = sim.serve_pty(link)
        fd = os.open(pty.slave_name, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"\x01S3CRETi50100")
            readable, _, _ = select.select([fd], [], [], 0.1)
            assert not readable  # nothing until the terminator comes
            os.write(fd, b"\r\n")
            data = b""
            while not data.endswith(b"\x04"):
                select.select([fd], [], [], 5)
                data += os.read(fd, 4096)
            assert codec.decode(data, etx=0x04) == (len(data), ClockReply("i50100", STAMP))
        finally:
            os.close(fd)
        assert link.is_symlink()
