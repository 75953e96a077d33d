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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from drivers import registry
from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.driver_errors import translated
from edgectl.errors import EdgectlError, LineUnavailableError

if TYPE_CHECKING:
    from drivers.registry import Found, Prober, Setting

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


class PortUnavailable(EdgectlError):
    code = "port_unavailable"


def _names() -> tuple[str, ...]:
    """The protocols probe and scan know, as `--protocol` takes them (no driver imported)."""
    return tuple(e.probe_name for e in registry.probed() if e.probe_name is not None)


def protocols() -> dict[str, Prober]:
    """Each protocol's prober, found through its registry entry, in scan order."""
    return {e.probe_name: e.prober() for e in registry.probed() if e.probe_name is not None}


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
    probe.add_argument("--protocol", required=True, choices=_names(), help="device protocol")
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
        choices=_names(),
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
    protocol = protocols()[args.protocol]
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
            low = protocol.show_address(valid[0])
            high = protocol.show_address(valid[-1])
            return output.fail(
                "probe",
                f"{protocol.show_address(bad[0])} is not a {protocol.name} address ({low}-{high})",
            )
        addresses = wanted
    return _report(args, [(protocol, settings, list(addresses))], stop_at_first=False)


def run_scan(args: argparse.Namespace) -> int:
    known = protocols()
    chosen = args.protocol or list(known)
    plan: Plan = [
        (prober, list(prober.settings), list(prober.addresses))
        for name, prober in known.items()
        if name in chosen
    ]
    return _report(args, plan, stop_at_first=args.first)


Plan = list[tuple["Prober", list["Setting"], list[int | None]]]


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
            protocol: Prober = protocol,
            settings: list[Setting] = settings,
            addresses: list[int | None] = addresses,
            timeout_s: float = timeout_s,
        ) -> list[Found]:
            return asyncio.run(
                _probe(
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
    protocol = found[0].prober
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


async def _probe(
    port: str,
    prober: Prober,
    settings: Sequence[Setting],
    addresses: Sequence[int | None],
    *,
    timeout_s: float,
    progress: Callable[[], None],
    stop_at_first: bool,
) -> list[Found]:
    """The prober's loop, a port it cannot open said as the CLI says it."""
    try:
        with translated():
            return await prober.probe(
                port,
                settings,
                addresses,
                timeout_s=timeout_s,
                progress=progress,
                stop_at_first=stop_at_first,
            )
    except LineUnavailableError as exc:
        raise PortUnavailable(str(exc)) from None
