"""`edgectl probe PORT` and `edgectl scan PORT`: which devices answer on a free line, and how.

For commissioning and fault finding with the daemon stopped: the port is opened by this
process alone (a port the daemon holds is refused), every address of a protocol is asked at
every line setting, and what answered is reported. The questions change nothing on a device:
DART pumps only get POLLs (no command, no sequence number), a TLS console an inventory request
(i20100), a Modbus probe a read of one input register.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import re
import stat
import sys
import termios
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.base import TransportError
from drivers.transport import SerialTransport
from drivers.wayne_dart import codec as dart
from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.errors import EdgectlError

# Unix98 pty slaves (/dev/pts/N) use these device majors: a pty ignores baud and parity.
_PTY_MAJORS = range(136, 144)

PROBE_EXAMPLE = """\
examples:
  edgectl probe /dev/ttyUSB0 --protocol dart
  edgectl probe /dev/ttyUSB0 --protocol dart --baud 9600 --parity odd --address 0x50 0x51
  edgectl probe /dev/ttyS1 --protocol tls
  edgectl probe /dev/ttyUSB1 --protocol modbus --address 1-32 --json

Stop the daemon first (systemctl stop edgectl): while it runs it holds the port, and
`edgectl sniff LINE` shows its traffic instead.
  dart    Wayne DART pumps, addresses 0x50-0x6F, 9600/19200 baud x odd/even/no parity;
          only POLLs are sent, so nothing changes on a pump.
  tls     a Veeder-Root TLS console (one per port), 9600/2400/1200 baud x 8N1/7E1/7O1,
          asked for its inventory (i20100), with and without a CR LF terminator.
  modbus  Modbus RTU probes, device ids 1-16 unless --address says otherwise (e.g. 1-247),
          9600/19200 baud x no/even/odd parity, asked to read input register 0 (an
          exception reply counts: the device is there).
exit status: 0 something answered, 1 nothing answered or the port cannot be used, 2 usage.
"""

SCAN_EXAMPLE = """\
examples:
  edgectl scan /dev/ttyUSB0
  edgectl scan /dev/ttyUSB1 --first --timeout-ms 30
  edgectl scan /dev/ttyS1 --protocol tls --protocol modbus

Tries Wayne DART (addresses 0x50-0x6F at 9600/19200 baud x odd/even/no parity), then a
Veeder-Root TLS console, then Modbus probes (ids 1-16), and stops after the first protocol
that answers: one line carries one protocol. With --first it stops at the first setting
where anything answers. Stop the daemon first: while it runs it holds the port.
exit status: 0 something answered, 1 nothing answered or the port cannot be used, 2 usage.
"""


@dataclass(frozen=True, slots=True)
class Setting:
    baud: int
    parity: str
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.baud} {self.bytesize}{self.parity[0].upper()}1"

    def as_json(self) -> dict[str, Any]:
        return {"baud": self.baud, "parity": self.parity, "bytesize": self.bytesize}


@dataclass(slots=True)
class Found:
    """A device that answered, at which settings, and what it said first."""

    protocol: str
    address: int | None  # None: the protocol has no addresses (one TLS console per port)
    reply: str
    settings: list[Setting] = field(default_factory=list)

    @property
    def where(self) -> str:
        return _show_address(self.protocol, self.address)


Ask = Callable[[SerialTransport, int | None, Setting, float], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Protocol:
    """How to ask one kind of device whether it is there."""

    name: str
    devices: str  # "DART pump(s)"
    settings: tuple[Setting, ...]
    addresses: tuple[int | None, ...]  # asked by default
    valid: range  # every address the protocol has (empty: none, one device per port)
    timeout_ms: int
    ask: Ask


class PortUnavailable(EdgectlError):
    code = "port_unavailable"


def register(sub: Subparsers) -> None:
    probe = sub.add_parser(
        "probe",
        help="find which devices answer on a free serial port",
        description="Ask every address of one protocol on a serial port the daemon is not "
        "using, at each line setting, and report which answer.",
        epilog=PROBE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument("port", help="serial device, e.g. /dev/ttyUSB0")
    probe.add_argument(
        "--protocol", required=True, choices=tuple(PROTOCOLS), help="device protocol"
    )
    probe.add_argument(
        "--address",
        type=_addresses,
        nargs="+",
        metavar="ADDR",
        help="only these addresses (0x50, 80, or a range 1-32)",
    )
    probe.add_argument("--baud", type=int, action="append", help="only this baud (repeatable)")
    probe.add_argument(
        "--parity",
        choices=("odd", "even", "none"),
        action="append",
        help="only this parity (repeatable)",
    )
    _common(probe)
    probe.set_defaults(func=output.guarded("probe", run_probe))

    scan = sub.add_parser(
        "scan",
        help="find devices and line settings on a free serial port",
        description="Try each protocol, address and line setting on a serial port the daemon "
        "is not using, and report which devices answer.",
        epilog=SCAN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument("port", help="serial device, e.g. /dev/ttyUSB0")
    scan.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        action="append",
        help="only this protocol (repeatable; default: all, in the order above)",
    )
    scan.add_argument(
        "--first", action="store_true", help="stop at the first setting where anything answers"
    )
    _common(scan)
    scan.set_defaults(func=output.guarded("scan", run_scan))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout-ms",
        type=int,
        metavar="MS",
        help="how long to wait for each answer (default: dart 50, tls 1000, modbus 500)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _addresses(text: str) -> list[int]:
    match = re.fullmatch(r"(\w+)-(\w+)", text)
    try:
        if match:
            low, high = int(match.group(1), 0), int(match.group(2), 0)
            if low > high:
                raise ValueError
            return list(range(low, high + 1))
        return [int(text, 0)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address (0x50, 80) or a range (1-32)"
        ) from None


# --------------------------------------------------------------------------- commands


def run_probe(args: argparse.Namespace) -> int:
    protocol = PROTOCOLS[args.protocol]
    settings = [
        s
        for s in protocol.settings
        if (not args.baud or s.baud in args.baud) and (not args.parity or s.parity in args.parity)
    ]
    if not settings:
        known = ", ".join(str(s) for s in protocol.settings)
        return output.fail("probe", f"no {protocol.name} setting matches (known: {known})")
    addresses: Sequence[int | None] = protocol.addresses
    if args.address:
        wanted = sorted({a for group in args.address for a in group})
        valid = protocol.valid
        if not valid:
            return output.fail("probe", f"{protocol.name} devices have no address")
        bad = [a for a in wanted if a not in valid]
        if bad:
            low = _show_address(protocol.name, valid[0])
            high = _show_address(protocol.name, valid[-1])
            return output.fail(
                "probe",
                f"{_show_address(protocol.name, bad[0])} is not a {protocol.name} address "
                f"({low}-{high})",
            )
        addresses = wanted
    return _report(args, [(protocol, settings, list(addresses))], stop_at_first=False)


def run_scan(args: argparse.Namespace) -> int:
    chosen = args.protocol or list(PROTOCOLS)
    plan = [
        (PROTOCOLS[name], list(PROTOCOLS[name].settings), list(PROTOCOLS[name].addresses))
        for name in PROTOCOLS
        if name in chosen
    ]
    return _report(args, plan, stop_at_first=args.first)


Plan = list[tuple[Protocol, list[Setting], list[int | None]]]


def _report(args: argparse.Namespace, plan: Plan, *, stop_at_first: bool) -> int:
    if args.timeout_ms is not None and not 1 <= args.timeout_ms <= 10000:
        return output.fail("probe", "--timeout-ms must be between 1 and 10000")
    port = args.port
    check_free(port)
    pty = is_pty(port)
    show_progress = sys.stderr.isatty() and not args.json
    found: list[Found] = []
    for protocol, settings, addresses in plan:
        if not args.json:
            output.note(
                f"probing {port} for {protocol.devices}: {len(addresses)} address(es) at "
                f"{len(settings)} setting(s)"
            )
        timeout_s = (args.timeout_ms or protocol.timeout_ms) / 1000

        def work(
            step: Callable[[], None],
            protocol: Protocol = protocol,
            settings: list[Setting] = settings,
            addresses: list[int | None] = addresses,
            timeout_s: float = timeout_s,
        ) -> list[Found]:
            return asyncio.run(
                probe(
                    port,
                    protocol,
                    settings,
                    addresses,
                    timeout_s=timeout_s,
                    progress=step,
                    stop_at_first=stop_at_first,
                )
            )

        found = _with_progress(show_progress, protocol.name, len(settings) * len(addresses), work)
        if found:
            break  # one line carries one protocol
    tried = [
        {"protocol": protocol.name, **setting.as_json()}
        for protocol, settings, _ in plan
        for setting in settings
    ]
    if args.json:
        output.print_json(
            {
                "port": port,
                "pty": pty,
                "tried": tried,
                "found": [
                    {
                        "protocol": f.protocol,
                        "address": f.where if f.address is not None else None,
                        "settings": [s.as_json() for s in f.settings],
                        "reply": f.reply,
                    }
                    for f in found
                ],
            }
        )
        return output.EXIT_OK if found else output.EXIT_FAILED
    if not found:
        if len(plan) == 1:
            protocol, settings, addresses = plan[0]
            what = protocol.devices.replace("(s)", "")
            asked = f"{len(addresses)} address(es) at {', '.join(map(str, settings))}"
        else:
            what = "device"
            asked = "; ".join(
                f"{p.name} {len(a)} address(es) at {len(s)} setting(s)" for p, s, a in plan
            )
        return output.fail(None, f"no {what} answered on {port} ({asked})")
    protocol = PROTOCOLS[found[0].protocol]
    out = output.console()
    out.print(
        output.table(
            None,
            ("protocol", "address", "answers at", "first reply"),
            [(f.protocol, f.where, ", ".join(map(str, f.settings)), f.reply) for f in found],
        )
    )
    common = set.intersection(*(set(f.settings) for f in found))
    where = ", ".join(str(s) for s in protocol.settings if s in common) or "differing settings"
    out.print(
        f"{len(found)} {protocol.devices} answer on {output.esc(port)}: "
        f"{', '.join(f.where for f in found)} at {where}"
    )
    if pty:
        out.print(f"note: {output.esc(port)} is a pseudo-terminal, which ignores baud and parity")
    return output.EXIT_OK


def _with_progress(
    show: bool, label: str, total: int, work: Callable[[Callable[[], None]], list[Found]]
) -> list[Found]:
    if not show:
        return work(lambda: None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"probing {label}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=output.console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        return work(lambda: bar.advance(task))


# --------------------------------------------------------------------------- the line


def check_free(port: str) -> None:
    """Refuse a port that is missing, not ours to open, or held by another process."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PortUnavailable(f"{port} does not exist") from None
    except PermissionError:
        raise PortUnavailable(
            f"permission denied on {port}: run as root or as a member of its group (dialout)"
        ) from None
    except OSError as exc:
        raise PortUnavailable(f"cannot open {port}: {exc.strerror or exc}") from None
    try:
        # The daemon opens its ports with an exclusive lock (pyserial exclusive=True).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PortUnavailable(
            f"{port} is in use by another process (a running edgectl daemon holds its lines): "
            "stop it first, or watch the line with `edgectl sniff LINE`"
        ) from None
    finally:
        os.close(fd)


def is_pty(port: str) -> bool:
    with contextlib.suppress(OSError):
        mode = os.stat(port)
        return stat.S_ISCHR(mode.st_mode) and os.major(mode.st_rdev) in _PTY_MAJORS
    return False


async def probe(
    port: str,
    protocol: Protocol,
    settings: Sequence[Setting],
    addresses: Sequence[int | None],
    *,
    timeout_s: float,
    progress: Callable[[], None] = lambda: None,
    stop_at_first: bool = False,
) -> list[Found]:
    """Ask each address at each setting; the devices that answered, in address order."""
    found: dict[int | None, Found] = {}
    for setting in settings:
        transport = SerialTransport(
            port,
            baud=setting.baud,
            parity=setting.parity,
            bytesize=setting.bytesize,
            name=port,
        )
        try:
            await transport.open()
        except TransportError as exc:
            if "lock" in str(exc):
                raise PortUnavailable(f"{port} is in use by another process") from None
            raise PortUnavailable(str(exc)) from None
        except termios.error:
            # The port cannot take this setting (a pty refuses 7 data bits): nothing to ask.
            for _ in addresses:
                progress()
            continue
        try:
            for address in addresses:
                reply = await protocol.ask(transport, address, setting, timeout_s)
                if reply is not None:
                    device = found.setdefault(address, Found(protocol.name, address, reply))
                    device.settings.append(setting)
                progress()
        finally:
            transport.close()
        if stop_at_first and found:
            break
    return [found[address] for address in sorted(found, key=lambda a: -1 if a is None else a)]


def _wire_s(setting: Setting, size: int) -> float:
    """Time `size` characters take on the line at this setting."""
    return size * (1 + setting.bytesize + (setting.parity != "none") + 1) / setting.baud


async def _exchange(
    transport: SerialTransport,
    request: bytes,
    timeout_s: float,
    answer: Callable[[bytearray], str | None],
) -> str | None:
    """Send `request`, then read until `answer` finds a reply in what came back, or time out."""
    transport.discard_input()
    await transport.write(request)
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        received += await transport.read_some(remaining)
        reply = answer(received)
        if reply is not None:
            return reply


# --------------------------------------------------------------------------- Wayne DART

_DART_REPLIES = frozenset(
    {dart.FrameKind.EOT, dart.FrameKind.DATA, dart.FrameKind.ACK, dart.FrameKind.NAK}
)


async def _ask_dart(
    transport: SerialTransport, address: int | None, setting: Setting, timeout_s: float
) -> str | None:
    assert address is not None
    request = dart.encode(dart.poll(address))

    def answer(received: bytearray) -> str | None:
        while received:
            used, item = dart.decode(received)
            if used == 0:
                return None
            del received[:used]
            # Only what a pump sends counts: an adapter may echo our own POLL back.
            if (
                isinstance(item, dart.Frame)
                and item.address == address
                and item.kind in _DART_REPLIES
            ):
                return _dart_text(item)
        return None

    return await _exchange(transport, request, _wire_s(setting, len(request)) + timeout_s, answer)


def _dart_text(frame: dart.Frame) -> str:
    if frame.kind is dart.FrameKind.EOT:
        return "EOT (idle, nothing to report)"
    if frame.kind is dart.FrameKind.DATA:
        described = dart.describe(frame, "pump")
        parts = [f"{tx['name']}: {tx['text']}" for tx in described["transactions"]]
        return "DATA " + "; ".join(parts)
    return str(frame.kind.name)


# --------------------------------------------------------------------------- Veeder-Root TLS


async def _ask_tls(
    transport: SerialTransport, address: int | None, setting: Setting, timeout_s: float
) -> str | None:
    from drivers.veeder_root import codec as tls

    def answer(received: bytearray) -> str | None:
        while received:
            used, item = tls.decode(received)
            if used == 0:
                return None
            del received[:used]
            if not isinstance(item, tls.Malformed) and item is not None:
                return _tls_text(item)
        return None

    # Some consoles act on a command only once a newline follows it; most need none.
    for terminator, shown in ((b"", ""), (b"\r\n", " (needs a CR LF terminator)")):
        request = tls.encode_command("i20100", terminator=terminator)
        wait = _wire_s(setting, len(request)) + timeout_s
        reply = await _exchange(transport, request, wait, answer)
        if reply is not None:
            return reply + shown
    return None


def _tls_text(item: object) -> str:
    from drivers.veeder_root import codec as tls

    if isinstance(item, tls.Inventory):
        tanks = getattr(item, "tanks", ())
        return f"i201 inventory of {len(tanks)} tank(s)"
    if isinstance(item, tls.Unsupported):
        return "9999FF1B: the console answers but refuses i201"
    if isinstance(item, tls.DisplayReport):
        return "a display-format report"
    return f"{type(item).__name__} reply"


# --------------------------------------------------------------------------- Modbus RTU

_MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}
_READ_INPUT_REGISTERS = 0x04


def modbus_crc(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS: reflected 0xA001, initial 0xFFFF; sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def modbus_request(unit: int, function: int, start: int, count: int) -> bytes:
    body = bytes((unit, function)) + start.to_bytes(2, "big") + count.to_bytes(2, "big")
    return body + modbus_crc(body).to_bytes(2, "little")


def modbus_reply(received: bytes | bytearray, unit: int, function: int) -> str | None:
    """A CRC-valid reply of `unit` to `function` anywhere in `received` (an echo of our own
    request, or noise, may come first), described; None if there is none yet."""
    for start in range(len(received) - 4):
        if received[start] != unit:
            continue
        code = received[start + 1]
        if code == function:
            size = 3 + received[start + 2] + 2
        elif code == function | 0x80:
            size = 5
        else:
            continue
        frame = received[start : start + size]
        if len(frame) < size or modbus_crc(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
            continue
        if code == function:
            data = frame[3:-2]
            return f"FC{function:02d} reply: {len(data) // 2} register(s) = {data.hex(' ').upper()}"
        reason = _MODBUS_EXCEPTIONS.get(frame[2], "unknown")
        return f"exception {frame[2]:02d} ({reason}): the device is there"
    return None


async def _ask_modbus(
    transport: SerialTransport, address: int | None, setting: Setting, timeout_s: float
) -> str | None:
    assert address is not None
    # Modbus RTU frames are told apart by 3.5 characters of silence.
    await asyncio.sleep(_wire_s(setting, 4))
    request = modbus_request(address, _READ_INPUT_REGISTERS, 0, 1)
    wait = _wire_s(setting, len(request)) + timeout_s
    return await _exchange(
        transport,
        request,
        wait,
        lambda received: modbus_reply(received, address, _READ_INPUT_REGISTERS),
    )


# --------------------------------------------------------------------------- the protocols


def _show_address(protocol: str, address: int | None) -> str:
    if address is None:
        return "console"
    return f"0x{address:02X}" if protocol == "dart" else str(address)


PROTOCOLS: dict[str, Protocol] = {
    "dart": Protocol(
        name="dart",
        devices="DART pump(s)",
        settings=tuple(
            Setting(baud, parity) for baud in (9600, 19200) for parity in ("odd", "even", "none")
        ),
        addresses=tuple(range(dart.ADDRESS_MIN, dart.ADDRESS_MAX + 1)),
        valid=range(dart.ADDRESS_MIN, dart.ADDRESS_MAX + 1),
        timeout_ms=50,
        ask=_ask_dart,
    ),
    "tls": Protocol(
        name="tls",
        devices="TLS console(s)",
        settings=tuple(
            Setting(baud, parity, bytesize)
            for baud in (9600, 2400, 1200)
            for parity, bytesize in (("none", 8), ("even", 7), ("odd", 7))
        ),
        addresses=(None,),
        valid=range(0),
        timeout_ms=1000,
        ask=_ask_tls,
    ),
    "modbus": Protocol(
        name="modbus",
        devices="Modbus device(s)",
        settings=tuple(
            Setting(baud, parity) for baud in (9600, 19200) for parity in ("none", "even", "odd")
        ),
        addresses=tuple(range(1, 17)),
        valid=range(1, 248),
        timeout_ms=500,
        ask=_ask_modbus,
    ),
}
