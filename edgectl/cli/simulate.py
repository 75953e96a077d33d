"""`edgectl simulate`: a station's devices played on ptys, so the daemon runs without hardware."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers import registry

if TYPE_CHECKING:
    from edgectl.config import Config, LineConfig

# The simulated DART pumps `simulate dart` and the demo run (its registry entry's simulator).
DART = "wayne_dart"
IFSF = "ifsf"

_DART_EXAMPLES = """\
examples:
  # every wayne_dart line of the demo station, with random customers
  edgectl simulate dart --config config/demo.toml --customers random

  # one line, real 9600 baud timing, pumps answering 5 ms after a request
  edgectl simulate dart --config config/demo.toml --line north --baud 9600 --reply-delay-ms 5

  # no config: two pumps with two nozzles each behind /tmp/dart
  edgectl simulate dart --link /tmp/dart --pumps 0x50,0x51 --nozzles 2

  # a scripted pay-at-pump sale, then exit (see docs/simulator.md)
  edgectl simulate dart --config config/demo.toml --script config/scripts/pay-at-pump.sim

  # customers driven from outside: socat - UNIX-CONNECT:/tmp/dart-sim.sock
  edgectl simulate dart --config config/demo.toml --control-socket /tmp/dart-sim.sock

The simulator runs until Ctrl-C or SIGTERM (a script: until its end, unless --keep-running).
Point the daemon's line port at the printed path. PUMP in control commands is the pump's
number in the config (quick mode: 1, 2, ... in --pumps order), or its address as 0x50.
"""

_IFSF_EXAMPLES = """\
examples:
  # one dispenser node (1.1) with two fuelling points of two nozzles, random customers
  edgectl simulate ifsf --fps 2 --customers random

  # four PetroChina DIT nozzles, each its own node 1.9-1.12
  edgectl simulate ifsf --nodes 4 --first-node 9 --fps 1 --nozzles 1 --node-per-nozzle \\
      --profile petrochina

  # a scripted sale, then exit (PUMP: the FPs numbered 1, 2, ... node by node)
  edgectl simulate ifsf --script config/scripts/ifsf-sale.sim

The nodes send their heartbeat to --cd-heartbeat and hear the controller's on
--heartbeat-port; a controller on this host sends its own to 127.255.255.255 at that port
(every node hears it). Faults: silent, refuse, drop, garbage, power-cycle (docs/simulator.md).
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
    _people_and_control(dart)
    dart.set_defaults(func=run_dart)

    ifsf = kinds.add_parser(
        "ifsf",
        help="IFSF dispensers on the network",
        description=(
            "Simulate IFSF dispenser nodes on TCP/IP (loopback by default): each node has its\n"
            "TCP server, sends its UDP heartbeat to the controller and answers through a\n"
            "dispenser model (fuelling points, nozzles, prices, transaction buffers)."
        ),
        epilog=_IFSF_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nodes = ifsf.add_argument_group("what to simulate")
    nodes.add_argument("--nodes", type=int, default=1, help="dispenser nodes (default 1)")
    nodes.add_argument(
        "--first-node", type=int, default=1, help="LNA node of the first, 1.N (default 1)"
    )
    nodes.add_argument("--fps", type=int, default=1, help="fuelling points per node, 1-4")
    nodes.add_argument("--nozzles", type=int, default=2, help="logical nozzles per FP, 1-8")
    nodes.add_argument(
        "--node-per-nozzle",
        action="store_true",
        help="every nozzle its own node with FP 1 (PetroChina DIT dispensers)",
    )
    nodes.add_argument(
        "--profile",
        default="generic",
        help="dialect: generic, petrochina or sinopec (default generic)",
    )
    net = ifsf.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    net.add_argument(
        "--tcp-port",
        type=int,
        default=0,
        help="TCP port of the first node, the next ones following (default 0: any free port; "
        "the controller learns them from the heartbeats)",
    )
    net.add_argument(
        "--heartbeat-port",
        type=int,
        default=3487,
        help="UDP port the nodes hear the controller's heartbeat on (default 3487: a "
        "controller on the same host has 3486; it sends to 127.255.255.255 at this port)",
    )
    net.add_argument(
        "--cd-heartbeat",
        action="append",
        type=_endpoint,
        metavar="HOST:PORT",
        help="where the nodes send their heartbeat (default 127.0.0.1:3486; repeatable)",
    )
    net.add_argument(
        "--heartbeat-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between heartbeats (default 10)",
    )
    _people_and_control(ifsf)
    ifsf.set_defaults(func=run_ifsf)


def _people_and_control(parser: argparse.ArgumentParser) -> None:
    """The customers and control options every pump simulator takes."""
    people = parser.add_argument_group("customers")
    people.add_argument(
        "--customers",
        choices=("random", "none"),
        default="none",
        help="random: people arrive and use the pumps; none: only the controller and "
        "scripted customers act (default none, with or without --script and "
        "--control-socket; the command `customers random` switches them on at run time)",
    )
    people.add_argument(
        "--mean-interval",
        type=float,
        default=20.0,
        metavar="S",
        help="mean seconds between customers arriving on a line (default 20)",
    )
    people.add_argument("--seed", type=int, help="seed for reproducible customers")
    control = parser.add_argument_group(
        "control (one command a line, one reply a line: docs/simulator.md)"
    )
    control.add_argument(
        "--script",
        type=Path,
        metavar="FILE",
        help="run FILE's commands in order, printing each reply; exit 0 at its end, 1 at "
        "its first error (- reads the script from stdin)",
    )
    control.add_argument(
        "--keep-running",
        action="store_true",
        help="after the script, go on simulating until Ctrl-C or SIGTERM",
    )
    control.add_argument(
        "--control",
        choices=("-",),
        help="-: take commands on stdin and print the replies; an error does not stop it, "
        "quit or end of input stops the simulator",
    )
    control.add_argument(
        "--control-socket",
        type=Path,
        metavar="PATH",
        help="serve the commands on a Unix socket at PATH (mode 0600), one session per "
        "connection, while the simulator runs",
    )


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


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def run_dart(args: argparse.Namespace) -> int:
    from edgectl.config import load_config
    from edgectl.driver_errors import translated
    from edgectl.errors import ConfigError, EdgectlError
    from edgectl.logs import configure

    if args.config is not None and (args.link is not None or args.pumps is not None):
        print("simulate dart: use either --config or --link/--pumps, not both", file=sys.stderr)
        return 2
    if args.config is None and (args.link is None or args.pumps is None):
        print("simulate dart: give --config, or --link together with --pumps", file=sys.stderr)
        return 2
    try:
        script = _script(args)
    except ValueError as exc:
        print(f"simulate dart: {exc}", file=sys.stderr)
        return 2
    configure(level="info", fmt="console")
    reply_delay_s = args.reply_delay_ms / 1000
    try:
        with translated():  # a simulator's line errors (drivers') as edgectl's
            if args.config is not None:
                config = load_config(args.config)
                sims = build_simulators(
                    config,
                    line=args.line,
                    baud=args.baud,
                    reply_delay_s=reply_delay_s,
                )
                numbers = {(p.line, p.address): p.number for p in config.pumps}
            else:
                sims = [_quick_simulator(args, reply_delay_s)]
                numbers = {("dart", a): n for n, a in enumerate(args.pumps, start=1)}
    except ConfigError as exc:  # exit status 1, as every command gives a config's error
        print(f"simulate dart: {exc}", file=sys.stderr)
        return 1
    except (EdgectlError, ValueError, OSError) as exc:
        print(f"simulate dart: {exc}", file=sys.stderr)
        return 2
    for sim in sims:
        addresses = ", ".join(f"0x{p.address:02X}" for p in sim.pumps)
        timing = f"{sim.baud} baud" if sim.baud else "no line timing"
        link = sim.link
        where = f"{link.link} -> {link.slave_name}" if link is not None else "?"
        print(f"{sim.name}: {where}  pumps {addresses}  ({timing})")
    return asyncio.run(_serve(sims, _serve_plan(args, numbers, script)))


def run_ifsf(args: argparse.Namespace) -> int:
    from edgectl.logs import configure

    try:
        script = _script(args)
    except ValueError as exc:
        print(f"simulate ifsf: {exc}", file=sys.stderr)
        return 2
    try:
        network = _ifsf_plan(args)
    except ValueError as exc:
        print(f"simulate ifsf: {exc}", file=sys.stderr)
        return 2
    configure(level="info", fmt="console")
    return asyncio.run(_serve_network(IFSF, network, _serve_plan(args, {}, script)))


def _script(args: argparse.Namespace) -> list[str] | None:
    """The lines of `--script FILE` (None: no script, or `-`, stdin); ValueError for a file
    that cannot be read or options that do not go together."""
    if str(args.script) == "-" and args.control == "-":
        raise ValueError("stdin is either the script or the console")
    if args.keep_running and args.script is None:
        raise ValueError("--keep-running goes with --script")
    if args.script is None or str(args.script) == "-":
        return None
    try:
        lines: list[str] = args.script.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the script {args.script}: {exc}") from None
    return lines


def _serve_plan(
    args: argparse.Namespace, numbers: dict[tuple[str, int], int], script: list[str] | None
) -> registry.ServePlan:
    """The customers and control options (`_people_and_control`) as the simulator's plan."""
    return registry.ServePlan(
        numbers=numbers,
        customers=args.customers,
        mean_interval_s=args.mean_interval,
        seed=args.seed,
        control_socket=args.control_socket,
        script=script,
        script_name=None if args.script is None else str(args.script),
        script_from_stdin=str(args.script) == "-",
        keep_running=args.keep_running,
        console=args.control == "-",
    )


def _ifsf_plan(args: argparse.Namespace) -> registry.NetworkPlan:
    """Quick mode: `--nodes` nodes of `--fps` FPs of `--nozzles` nozzles (or, DIT style, a
    node per nozzle), the FPs numbered 1, 2, ... as pumps."""
    if not 1 <= args.fps <= 4 or not 1 <= args.nozzles <= 8 or args.nodes < 1:
        raise ValueError("--nodes is at least 1, --fps 1-4 and --nozzles 1-8")
    prices = {n: _QUICK_PRICES[(n - 1) % len(_QUICK_PRICES)] for n in range(1, args.nozzles + 1)}
    layout: list[list[dict[int, Decimal]]] = []  # nodes, their FPs, each FP's prices
    for _ in range(args.nodes):
        if args.node_per_nozzle:
            layout += [[{1: prices[n]}] for _ in range(args.fps) for n in prices]
        else:
            layout.append([dict(prices) for _ in range(args.fps)])
    last = args.first_node + len(layout) - 1
    if args.first_node < 1 or last > 127:
        raise ValueError(f"nodes 1.{args.first_node}-1.{last}: a node is 1-127")
    nodes, number = [], 0
    for index, fps in enumerate(layout):
        pumps = []
        for fp, fp_prices in enumerate(fps, start=1):
            number += 1
            pumps.append(registry.PumpPlan(number=number, address=fp, prices=fp_prices))
        port = args.tcp_port + index if args.tcp_port else 0
        nodes.append(registry.NodePlan(args.first_node + index, pumps, tcp_port=port))
    return registry.NetworkPlan(
        name="ifsf",
        nodes=nodes,
        host=args.host,
        heartbeat_port=args.heartbeat_port,
        heartbeat_destinations=tuple(args.cd_heartbeat or [("127.0.0.1", 3486)]),
        heartbeat_interval_s=args.heartbeat_interval,
        profile=args.profile,
    )


async def _serve_network(
    protocol: str, network: registry.NetworkPlan, plan: registry.ServePlan
) -> int:
    """Start a protocol's nodes on the network, say where they are, serve until stopped."""
    from edgectl.driver_errors import translated
    from edgectl.errors import EdgectlError

    simulation = registry.dispenser_simulation(protocol)
    assert simulation.network is not None
    try:
        with translated():  # the simulator's errors (drivers') as edgectl's
            sim = simulation.network(network)
            await sim.start()
    except (EdgectlError, ValueError, OSError) as exc:
        print(f"simulate {protocol}: {exc}", file=sys.stderr)
        return 2
    for line in sim.describe():
        print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        status: int = await simulation.serve(
            [sim], plan, stop, lambda line: print(line, flush=True), _warn
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("simulator stopped")
    return status


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def build_simulators(
    config: Config,
    *,
    line: str | None = None,
    baud: int | None = None,
    reply_delay_s: float = 0.0,
    totals: Mapping[int, Mapping[int, tuple[Decimal, Decimal]]] | None = None,
) -> list[Any]:
    """Start one simulator per configured line whose protocol has one (or only `line`),
    each serving a pty symlinked at the line's port path, pumps and prices as configured.

    `baud` None emulates each line's configured baud, 0 turns line timing off. `totals`
    (pump number → nozzle → volume, amount) lets simulated pumps keep their electronic
    totals from one run to the next, as real ones do. The caller stops the simulators; if
    one cannot start, those already started are stopped here.
    """
    from edgectl.errors import ConfigError

    chosen = [c for c in config.lines if line in (None, c.name)]
    if line is not None and not chosen:
        raise ConfigError(f"{config.source}: no line named {line!r}")
    sims: list[Any] = []
    try:
        for line_config in chosen:
            entry = registry.lookup(line_config.protocol)
            # A line on IP (IFSF) has no pty: its dispensers are a network (`build_networks`).
            if not entry.simulated or line_config.port is None:
                continue
            plan = _line_plan(config, line_config, baud, reply_delay_s, totals or {})
            sims.append(entry.dispenser_simulation().line(plan))
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    if not sims:
        raise ConfigError(f"{config.source}: no line with a simulator ({DART}) to simulate")
    return sims


def build_networks(
    config: Config, *, totals: Mapping[int, Mapping[int, tuple[Decimal, Decimal]]] | None = None
) -> list[Any]:
    """One simulator (not started: the caller starts and stops it) per configured line on IP
    whose protocol has one: its dispenser nodes on 127.0.0.1 with the configured FPs,
    nozzles, products and prices, hearing the controller's heartbeat at the port of the
    line's first `heartbeat_to` and sending theirs to the line's `heartbeat_port`."""
    sims: list[Any] = []
    for line_config in config.lines:
        simulation = registry.lookup(line_config.protocol).dispenser_simulation
        network = simulation().network if line_config.port is None else None
        if network is not None:
            sims.append(network(_network_plan(config, line_config, totals or {})))
    return sims


def _network_plan(
    config: Config,
    line: LineConfig,
    totals: Mapping[int, Mapping[int, tuple[Decimal, Decimal]]],
) -> registry.NetworkPlan:
    from edgectl.errors import ConfigError

    hears = line.heartbeat_to[0].rpartition(":")[2] if line.heartbeat_to else ""
    if line.heartbeat_port is None or not hears.isdigit():
        raise ConfigError(
            f"{config.source}: line {line.name!r}: its simulator needs heartbeat_port and "
            'heartbeat_to = ["127.0.0.1:PORT"] (the port the simulated nodes hear it on)'
        )
    nodes: dict[int, list[registry.PumpPlan]] = {}
    products: dict[int, dict[tuple[int, int], int]] = {}
    for plan, pump in zip(
        _pump_plans(config, line, totals), config.pumps_on(line.name), strict=True
    ):
        assert pump.node is not None  # the loader requires an IFSF pump's node and fp
        node = int(pump.node.split(".")[1])
        nodes.setdefault(node, []).append(plan)
        products.setdefault(node, {}).update(
            {(plan.address, n): line.products[g] for n, g in pump.nozzles.items()}
        )
    return registry.NetworkPlan(
        name=line.name,
        nodes=[
            registry.NodePlan(node, pumps, products=products[node])
            for node, pumps in sorted(nodes.items())
        ],
        heartbeat_port=int(hears),
        heartbeat_destinations=(("127.0.0.1", line.heartbeat_port),),
        heartbeat_interval_s=line.heartbeat_interval_s or 10.0,
        profile=line.profile,
    )


def _pump_plans(
    config: Config,
    line: LineConfig,
    totals: Mapping[int, Mapping[int, tuple[Decimal, Decimal]]],
) -> list[registry.PumpPlan]:
    """The line's pumps as the simulators take them (an IFSF pump's address: its FP)."""
    from edgectl.errors import ConfigError

    pumps: list[registry.PumpPlan] = []
    for pump in config.pumps_on(line.name):
        prices: dict[int, Decimal] = {}
        for nozzle, grade_id in pump.nozzles.items():
            grade = config.grade(grade_id)
            if grade is None:  # load_config resolves every grade; this is a broken model
                raise ConfigError(f"pump {pump.number}: grade {grade_id!r} is not defined")
            prices[nozzle] = grade.unit_price
        pumps.append(
            registry.PumpPlan(
                number=pump.number,
                address=pump.address if pump.fp is None else pump.fp,
                prices=prices,
                volume_decimals=pump.volume_decimals,
                amount_decimals=pump.amount_decimals,
                price_decimals=pump.price_decimals,
                totals=totals.get(pump.number, {}),
            )
        )
    return pumps


def _line_plan(
    config: Config,
    line: LineConfig,
    baud: int | None,
    reply_delay_s: float,
    totals: Mapping[int, Mapping[int, tuple[Decimal, Decimal]]],
) -> registry.LinePlan:
    pumps = _pump_plans(config, line, totals)
    assert line.port is not None  # build_simulators takes the lines on a serial port
    return registry.LinePlan(
        name=line.name,
        port=Path(line.port),
        pumps=pumps,
        baud=(line.baud if baud is None else baud) or None,
        bytesize=line.bytesize,
        parity=line.parity,
        stopbits=line.stopbits,
        reply_delay_s=reply_delay_s,
    )


def _quick_simulator(args: argparse.Namespace, reply_delay_s: float) -> Any:
    if not 1 <= args.nozzles <= 15:
        raise ValueError("--nozzles must be between 1 and 15")
    prices = {n: _QUICK_PRICES[(n - 1) % len(_QUICK_PRICES)] for n in range(1, args.nozzles + 1)}
    pumps = [
        registry.PumpPlan(number=n, address=a, prices=prices, price_decimals=_QUICK_DECIMALS)
        for n, a in enumerate(args.pumps, start=1)
    ]
    plan = registry.LinePlan(
        name="dart",
        port=args.link,
        pumps=pumps,
        baud=args.baud or None,
        reply_delay_s=reply_delay_s,
    )
    return registry.lookup(DART).dispenser_simulation().line(plan)


async def _serve(sims: list[Any], plan: registry.ServePlan) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def emit(line: str) -> None:
        print(line, flush=True)

    def warn(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        status = (
            await registry.lookup(DART).dispenser_simulation().serve(sims, plan, stop, emit, warn)
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for sim in sims:
            sim.stop()
    print("simulator stopped")
    return status
