"""`edgectl simulate`: a station's devices played on ptys, so the daemon runs without hardware."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.wayne_dart.sim import DartLineSimulator, SimPump
    from edgectl.config import Config

_DART_EXAMPLES = """\
examples:
  # every wayne_dart line of the demo station, with random customers
  edgectl simulate dart --config config/demo.toml --customers random

  # one line, real 9600 baud timing, pumps answering 5 ms after a request
  edgectl simulate dart --config config/demo.toml --line north --baud 9600 --reply-delay-ms 5

  # no config: two pumps with two nozzles each behind /tmp/dart
  edgectl simulate dart --link /tmp/dart --pumps 0x50,0x51 --nozzles 2

The simulator runs until Ctrl-C or SIGTERM. Point the daemon's line port at the printed path.
"""

# Unit prices for the quick mode, one per nozzle in turn (2 decimals).
_QUICK_PRICES = (Decimal("1.79"), Decimal("1.65"), Decimal("1.89"), Decimal("0.99"))
_QUICK_DECIMALS = 2


def register(subparsers: Any) -> None:
    simulate = subparsers.add_parser(
        "simulate",
        help="simulate devices on ptys",
        description="Simulate a station's devices on pseudo-terminals.",
    )
    kinds = simulate.add_subparsers(dest="device", metavar="DEVICE")
    simulate.set_defaults(func=lambda args: _usage(simulate))

    dart = kinds.add_parser(
        "dart",
        help="Wayne DART pumps",
        description=(
            "Simulate Wayne DART pumps: one pty per line, symlinked at the line's port path,\n"
            "pumps at their configured addresses with the configured grades and prices."
        ),
        epilog=_DART_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = dart.add_argument_group("what to simulate (a config, or --link with --pumps)")
    source.add_argument("--config", type=Path, help="station config (TOML)")
    source.add_argument("--line", help="simulate only this configured line")
    source.add_argument("--link", type=Path, help="quick mode: symlink to create for the pty")
    source.add_argument(
        "--pumps", type=_addresses, help="quick mode: pump addresses, e.g. 0x50,0x51"
    )
    source.add_argument(
        "--nozzles", type=int, default=2, help="quick mode: nozzles per pump (default 2)"
    )
    line = dart.add_argument_group("line behaviour")
    line.add_argument(
        "--baud",
        type=int,
        help="emulate the line's transmission time at this baud rate; 0 turns it off "
        "(default: the configured baud with --config, off in quick mode)",
    )
    line.add_argument(
        "--reply-delay-ms",
        type=float,
        default=0.0,
        help="a pump's think time before it answers (default 0)",
    )
    people = dart.add_argument_group("customers")
    people.add_argument(
        "--customers",
        choices=("random", "none"),
        default="none",
        help="random: people arrive and use the pumps; none: only the controller acts "
        "(default none)",
    )
    people.add_argument(
        "--mean-interval",
        type=float,
        default=20.0,
        metavar="S",
        help="mean seconds between customers arriving on a line (default 20)",
    )
    people.add_argument("--seed", type=int, help="seed for reproducible customers")
    dart.set_defaults(func=run_dart)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _addresses(text: str) -> tuple[int, ...]:
    try:
        addresses = tuple(int(part, 0) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of addresses: {text!r}") from None
    if not addresses:
        raise argparse.ArgumentTypeError("at least one address is needed")
    for address in addresses:
        if not 0x50 <= address <= 0x6F:
            raise argparse.ArgumentTypeError(f"0x{address:02X} is outside 0x50-0x6F")
    return addresses


def run_dart(args: argparse.Namespace) -> int:
    from edgectl.errors import EdgectlError
    from edgectl.logs import configure

    if args.config is not None and (args.link is not None or args.pumps is not None):
        print("simulate dart: use either --config or --link/--pumps, not both", file=sys.stderr)
        return 2
    if args.config is None and (args.link is None or args.pumps is None):
        print("simulate dart: give --config, or --link together with --pumps", file=sys.stderr)
        return 2
    configure(level="info", fmt="console")
    try:
        lines = _lines_from_config(args) if args.config is not None else [_quick_line(args)]
    except (EdgectlError, ValueError, OSError) as exc:
        print(f"simulate dart: {exc}", file=sys.stderr)
        return 2
    if not lines:
        print("simulate dart: no wayne_dart line to simulate", file=sys.stderr)
        return 2
    return asyncio.run(_serve(lines, args))


class _Line:
    """One line to simulate: its name, where the daemon expects it, and its pumps."""

    def __init__(self, name: str, port: Path, sim: DartLineSimulator) -> None:
        self.name = name
        self.port = port
        self.sim = sim


def _lines_from_config(args: argparse.Namespace) -> list[_Line]:
    from drivers.wayne_dart.codec import from_decimal
    from drivers.wayne_dart.sim import DartLineSimulator, SimPump
    from edgectl.config import load_config
    from edgectl.errors import ConfigError

    config: Config = load_config(args.config)
    chosen = [line for line in config.lines if args.line in (None, line.name)]
    if args.line is not None and not chosen:
        raise ConfigError(f"no line named {args.line!r} in {args.config}")
    lines: list[_Line] = []
    for line in chosen:
        if line.protocol != "wayne_dart":
            continue
        pumps: list[SimPump] = []
        for pump in config.pumps_on(line.name):
            prices: dict[int, int] = {}
            for nozzle, grade_id in pump.nozzles.items():
                grade = config.grade(grade_id)
                if grade is None:  # load_config resolves every grade; this is a broken model
                    raise ConfigError(f"pump {pump.number}: grade {grade_id!r} is not defined")
                prices[nozzle] = from_decimal(grade.unit_price, pump.price_decimals)
            pumps.append(
                SimPump(
                    pump.address,
                    prices,
                    volume_decimals=pump.volume_decimals,
                    amount_decimals=pump.amount_decimals,
                    price_decimals=pump.price_decimals,
                )
            )
        baud = line.baud if args.baud is None else args.baud
        sim = DartLineSimulator(
            pumps,
            baud=baud or None,
            data_bits=line.bytesize,
            parity=line.parity,
            stop_bits=line.stopbits,
            reply_delay_s=args.reply_delay_ms / 1000,
            name=line.name,
        )
        lines.append(_Line(line.name, Path(line.port), sim))
    return lines


def _quick_line(args: argparse.Namespace) -> _Line:
    from drivers.wayne_dart.codec import from_decimal
    from drivers.wayne_dart.sim import DartLineSimulator, SimPump

    if not 1 <= args.nozzles <= 15:
        raise ValueError("--nozzles must be between 1 and 15")
    prices = {
        n: from_decimal(_QUICK_PRICES[(n - 1) % len(_QUICK_PRICES)], _QUICK_DECIMALS)
        for n in range(1, args.nozzles + 1)
    }
    pumps = [SimPump(address, prices) for address in args.pumps]
    sim = DartLineSimulator(
        pumps, baud=args.baud or None, reply_delay_s=args.reply_delay_ms / 1000, name="dart"
    )
    return _Line("dart", args.link, sim)


async def _serve(lines: list[_Line], args: argparse.Namespace) -> int:
    from drivers.base import DriverError
    from drivers.wayne_dart.sim import RandomCustomers

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for line in lines:
            line.port.parent.mkdir(parents=True, exist_ok=True)
            if line.port.exists() and not line.port.is_symlink():
                raise FileExistsError(f"{line.port} exists and is not a symlink; not replacing it")
            pty = line.sim.serve_pty(line.port)
            addresses = ", ".join(f"0x{p.address:02X}" for p in line.sim.pumps)
            timing = f"{line.sim.baud} baud" if line.sim.baud else "no line timing"
            print(f"{line.name}: {line.port} -> {pty.slave_name}  pumps {addresses}  ({timing})")
        print("simulating; Ctrl-C to stop", flush=True)
        async with asyncio.TaskGroup() as group:
            customers = [
                group.create_task(
                    RandomCustomers(
                        line.sim,
                        mean_interval_s=args.mean_interval,
                        seed=None if args.seed is None else args.seed + index,
                    ).run(),
                    name=f"customers-{line.name}",
                )
                for index, line in enumerate(lines)
                if args.customers == "random"
            ]
            await stop.wait()
            for task in customers:
                task.cancel()
    except (OSError, DriverError) as exc:
        print(f"simulate dart: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for line in lines:
            line.sim.stop()
    print("simulator stopped")
    return 0
