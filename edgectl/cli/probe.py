"""`edgectl probe PORT` and `edgectl scan PORT`: which devices answer on a free line, and how;
`edgectl probe --protocol ifsf` and `edgectl scan --protocol ifsf`: which announce themselves
on the network.

For commissioning and fault finding with the daemon stopped: the port is opened by this
process alone (a port the daemon holds is refused), every address of a protocol is asked at
every line setting, and what answered is reported. The questions change nothing on a device:
DART pumps only get POLLs (no command, no sequence number), a TLS console an inventory request
(i20100), a Modbus probe a read of one input register.

A protocol whose devices announce themselves (IFSF's UDP heartbeats) is not asked on a port:
its listener (`registry.listeners()`, a `drivers.listening.Listener`) listens a while, beside
a running daemon too, and the devices heard are listed with a config snippet for them.
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
from typing import TYPE_CHECKING, NoReturn

from drivers import registry
from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.driver_errors import translated
from edgectl.errors import EdgectlError, LineUnavailableError
from edgectl.logs import configure

if TYPE_CHECKING:
    from drivers.registry import Found, Heard, Listener, Prober, Setting

# Unix98 pty slaves (/dev/pts/N) use these device majors: a pty ignores baud and parity.
_PTY_MAJORS = range(136, 144)

PROBE_EXAMPLE = """\
examples:
  edgectl probe /dev/ttyUSB0 --protocol dart
  edgectl probe /dev/ttyUSB0 --protocol dart --baud 9600 --parity odd --address 0x50 0x51
  edgectl probe /dev/ttyS1 --protocol tls
  edgectl probe /dev/ttyUSB1 --protocol modbus --address 1-32 --json
  edgectl probe --protocol ifsf
  edgectl probe --protocol ifsf --profile petrochina --seconds 25
  edgectl probe --protocol ifsf --read

For a serial port, stop the daemon first (systemctl stop edgectl): while it runs it holds
the port, and `edgectl sniff LINE` shows its traffic instead.
  dart    Wayne DART pumps, addresses 0x50-0x6F, 9600/19200 baud x odd/even/no parity;
          only POLLs are sent, so nothing changes on a pump.
  tls     a Veeder-Root TLS console (one per port), 9600/2400/1200 baud x 8N1/7E1/7O1,
          asked for its inventory (i20100), with and without a CR LF terminator.
  modbus  Modbus RTU probes, device ids 1-16 unless --address says otherwise (e.g. 1-247),
          9600/19200 baud x no/even/odd parity, asked to read input register 0 (an
          exception reply counts: the device is there).
{listeners}
A listening protocol takes no PORT and works beside a running daemon. It prints the nodes
heard (address, TCP port, LNA, status and its flags, heartbeats counted), then the station
config for them (TOML on stdout, notes on stderr).
exit status: 0 something answered or was heard, 1 nothing answered or was heard, or the
port cannot be used, 2 usage.
"""

SCAN_EXAMPLE = """\
examples:
  edgectl scan /dev/ttyUSB0
  edgectl scan /dev/ttyUSB1 --first --timeout-ms 30
  edgectl scan /dev/ttyS1 --protocol tls --protocol modbus
  edgectl scan --protocol ifsf

Tries Wayne DART (addresses 0x50-0x6F at 9600/19200 baud x odd/even/no parity), then a
Veeder-Root TLS console, then Modbus probes (ids 1-16), and stops after the first protocol
that answers: one line carries one protocol. With --first it stops at the first setting
where anything answers. Stop the daemon first: while it runs it holds the port.
Without a PORT, --protocol ifsf listens for IFSF heartbeats on every profile's UDP port
(3485 and 3486) at once, beside a running daemon too (see `edgectl probe --help`).
exit status: 0 something answered or was heard, 1 nothing answered or was heard, or the
port cannot be used, 2 usage.
"""


class PortUnavailable(EdgectlError):
    code = "port_unavailable"


def _names() -> tuple[str, ...]:
    """The serial protocols probe and scan know, as `--protocol` takes them (no driver
    imported)."""
    return tuple(e.probe_name for e in registry.probed() if e.probe_name is not None)


def _listeners() -> dict[str, Listener]:
    """The protocols found by listening, by name (their modules import no node layer)."""
    return {listener.name: listener for listener in registry.listeners()}


def protocols() -> dict[str, Prober]:
    """Each protocol's prober, found through its registry entry, in scan order."""
    return {e.probe_name: e.prober() for e in registry.probed() if e.probe_name is not None}


def register(sub: Subparsers) -> None:
    listeners = _listeners()
    probe = sub.add_parser(
        "probe",
        help="find which devices answer on a free serial port, or announce themselves",
        description="Ask every address of one protocol on a serial port the daemon is not "
        "using, at each line setting, and report which answer; or, for IFSF, listen for "
        "the dispensers' heartbeats and list those heard with their config.",
        epilog=PROBE_EXAMPLE.format(listeners="\n".join(x.help for x in listeners.values())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument(
        "port", nargs="?", help="serial device, e.g. /dev/ttyUSB0 (none for a listening protocol)"
    )
    probe.add_argument(
        "--protocol", required=True, choices=(*_names(), *listeners), help="device protocol"
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
    _listening(probe, listeners)
    probe.set_defaults(
        func=output.guarded("probe", run_probe),
        parser=probe,
        # Given with a listening protocol, these are a usage error.
        serial_options=(("address", "--address"), ("baud", "--baud"), ("parity", "--parity")),
    )

    scan = sub.add_parser(
        "scan",
        help="find devices and line settings on a free serial port",
        description="Try each protocol, address and line setting on a serial port the daemon "
        "is not using, and report which devices answer.",
        epilog=SCAN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument(
        "port", nargs="?", help="serial device, e.g. /dev/ttyUSB0 (none with --protocol ifsf)"
    )
    scan.add_argument(
        "--protocol",
        choices=(*_names(), *listeners),
        action="append",
        help="only this protocol (repeatable; default with a PORT: every serial one, in the "
        "order above)",
    )
    scan.add_argument(
        "--first", action="store_true", help="stop at the first setting where anything answers"
    )
    _common(scan)
    _listening(scan, listeners)
    scan.set_defaults(
        func=output.guarded("scan", run_scan), parser=scan, serial_options=(("first", "--first"),)
    )


def _listening(parser: argparse.ArgumentParser, listeners: dict[str, Listener]) -> None:
    """Each listening protocol's options, in a group of its own; the options' dests are
    kept so that a serial probe refuses them."""
    taken: list[tuple[str, str]] = []
    for listener in listeners.values():
        group = parser.add_argument_group(
            f"listening for {listener.devices} (--protocol {listener.name}, no PORT)"
        )
        taken += [(a.dest, a.option_strings[0]) for a in listener.add_arguments(group)]
    parser.set_defaults(listening_options=tuple(taken))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout-ms",
        type=int,
        metavar="MS",
        help="how long to wait for each answer (default: dart 50, tls 1000, modbus 500; "
        "serial protocols)",
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
    listener = _listeners().get(args.protocol)
    if listener is not None:
        if args.port is not None:
            _usage(
                args,
                f"--protocol {listener.name} listens on the network and takes no serial port: "
                f"drop {args.port}",
            )
        _refuse_serial_options(args, listener.name)
        return _listen(args, listener, every_port=False)
    if args.port is None:
        _usage(args, f"--protocol {args.protocol} needs the serial PORT, e.g. /dev/ttyUSB0")
    _refuse_listening_options(args, args.protocol)
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
    listeners = _listeners()
    # Each listening protocol asked for, once (--protocol is repeatable).
    heard_by = [listeners[name] for name in dict.fromkeys(args.protocol or ()) if name in listeners]
    if args.port is None:
        if not args.protocol:
            names = " or ".join(f"--protocol {name}" for name in listeners)
            _usage(args, f"give the serial PORT to scan, or {names} to listen on the network")
        serial = [name for name in args.protocol if name not in listeners]
        if serial:
            _usage(args, f"--protocol {serial[0]} needs the serial PORT, e.g. /dev/ttyUSB0")
        _refuse_serial_options(args, heard_by[0].name)
        return _listen_all(args, heard_by)
    if heard_by:
        _usage(
            args,
            f"--protocol {heard_by[0].name} listens on the network, not on {args.port}: "
            f"scan it alone (edgectl scan --protocol {heard_by[0].name})",
        )
    _refuse_listening_options(args, "a serial port")
    known = protocols()
    chosen = args.protocol or list(known)
    plan: Plan = [
        (prober, list(prober.settings), list(prober.addresses))
        for name, prober in known.items()
        if name in chosen
    ]
    return _report(args, plan, stop_at_first=args.first)


def _usage(args: argparse.Namespace, message: str) -> NoReturn:
    parser: argparse.ArgumentParser = args.parser
    parser.error(message)  # exits with status 2


def _refuse_serial_options(args: argparse.Namespace, protocol: str) -> None:
    """A usage error for the command's serial options given with a listening protocol."""
    given = [flag for dest, flag in args.serial_options if getattr(args, dest)]
    if args.timeout_ms is not None:
        given.append("--timeout-ms")
    if given:
        _usage(args, f"{given[0]} is for serial protocols, not for --protocol {protocol}")


def _refuse_listening_options(args: argparse.Namespace, what: str) -> None:
    """A usage error for a listener's options given with a serial port or protocol."""
    given = [flag for dest, flag in args.listening_options if getattr(args, dest)]
    if given:
        _usage(args, f"{given[0]} is for listening (no PORT), not for {what}")


def _listen_all(args: argparse.Namespace, listeners: Sequence[Listener]) -> int:
    codes = [_listen(args, listener, every_port=True) for listener in listeners]
    return output.EXIT_OK if output.EXIT_OK in codes else output.EXIT_FAILED


def _listen(args: argparse.Namespace, listener: Listener, *, every_port: bool) -> int:
    """Listen as the listener's options say; the nodes heard, their config, the exit status."""
    if getattr(args, "read", False):
        # Reading opens links (the node layer logs each step): only what went wrong shows.
        configure(level="warning", fmt="console")
    try:
        with translated():  # a port that cannot be bound (drivers' TransportError)
            heard: Heard = asyncio.run(
                listener.listen(
                    args, every_port, lambda line: None if args.json else output.note(line)
                )
            )
    except LineUnavailableError as exc:
        return output.fail(None, str(exc))
    if args.json:
        output.print_json(heard.json)
        if not heard.count:
            return output.fail(None, heard.hint)
        return output.EXIT_OK
    for line in heard.notes:
        output.note(f"note: {line}")
    if not heard.count:
        return output.fail(None, heard.hint)
    out = output.console()
    out.print(output.table(None, heard.columns, heard.rows))
    out.print(heard.summary)
    if heard.config:
        print()
        print(heard.config, end="")
    return output.EXIT_OK


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
