"""`edgectl demo`: a simulated station (Wayne DART pumps on ptys, IFSF dispensers on loopback,
random customers) run by the real daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live

from drivers import registry
from edgectl.cli import output
from edgectl.config import Config, load_config
from edgectl.errors import EdgectlError, StoreError
from edgectl.instance import InstanceLock
from edgectl.logs import configure
from edgectl.store.store import lock_path, open_read_only

if TYPE_CHECKING:
    from edgectl.cloud.client import CloudClient, Follower
    from edgectl.daemon import Daemon

EXAMPLE = """examples:
  edgectl demo                              # config/demo.toml, until Ctrl-C
  edgectl demo --duration 60 --seed 7       # one reproducible minute
  edgectl demo --with-broker                # pay-at-pump too, on a private mosquitto
  edgectl demo --broker 127.0.0.1:1883      # pay-at-pump through a broker already running

With a broker the demo also plays the cloud: every --order-every seconds it sends a signed
pay-at-pump order for an idle pump kept for such orders (the last pump of each line; walk-in
customers use the others), and a customer comes to fuel under it. The signing key pair is made
once, next to the demo's store.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="run a simulated station with the real daemon",
        description="Start simulated Wayne DART pumps on pseudo-terminals and IFSF dispensers "
        "on loopback, random customers, and the edgectl daemon against them; show live pump "
        "states and sales. "
        "No MQTT broker is needed. Ctrl-C stops everything cleanly.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", default="config/demo.toml", help="station TOML file")
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--seed", type=int, default=None, help="seed for random customers")
    parser.add_argument(
        "--customer-interval",
        type=float,
        default=6.0,
        help="mean seconds between customers arriving (default 6)",
    )
    parser.add_argument("--no-ui", action="store_true", help="no live table (for logs, CI)")
    cloud = parser.add_argument_group("pay-at-pump through an MQTT broker (none by default)")
    where = cloud.add_mutually_exclusive_group()
    where.add_argument(
        "--broker",
        type=_broker_address,
        metavar="HOST[:PORT]",
        help="a running MQTT 5 broker without TLS or login (port default 1883)",
    )
    where.add_argument(
        "--with-broker",
        action="store_true",
        help="start a private mosquitto on a free local port for this run",
    )
    cloud.add_argument(
        "--order-every",
        type=float,
        default=20.0,
        metavar="S",
        help="send a pay-at-pump order every S seconds (default 20)",
    )
    parser.set_defaults(func=_demo)


def _broker_address(text: str) -> tuple[str, int | None]:
    from edgectl.cli.cloud import parse_broker_address

    return parse_broker_address(text)


def _demo(args: argparse.Namespace) -> int:
    try:
        run = _RunDirectory.create()
    except OSError as exc:
        print(f"edgectl: cannot make the demo's run directory: {exc}", file=sys.stderr)
        return 1
    try:
        return _demo_in(run, args)
    finally:
        run.remove()


def _demo_in(run: _RunDirectory, args: argparse.Namespace) -> int:
    try:
        config, instance = run.prepare(Path(args.config))
    except EdgectlError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    if args.broker is None and not args.with_broker:
        return _demo_station(config, args, None, instance, run)
    if not args.order_every > 0:
        print("edgectl: --order-every must be a positive number of seconds", file=sys.stderr)
        return 2
    broker: _PrivateBroker | None = None
    if args.with_broker:
        binary = _mosquitto()
        if binary is None:
            print(
                "edgectl: --with-broker needs mosquitto, which is not installed here "
                "(apt-get install mosquitto), or give --broker HOST[:PORT] of a running broker",
                file=sys.stderr,
            )
            return 1
        broker = _PrivateBroker(binary)
        try:
            host, port = broker.start()
        except EdgectlError as exc:
            print(f"edgectl: {exc}", file=sys.stderr)
            return 1
    else:
        host, given_port = args.broker
        port = given_port or 1883
    try:
        cloud = _DemoCloud.prepare(config, host, port, private=broker is not None)
        return _demo_station(cloud.config, args, cloud, instance, run)
    except EdgectlError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()


def _demo_station(
    config: Config,
    args: argparse.Namespace,
    cloud: _DemoCloud | None,
    instance: InstanceLock,
    run: _RunDirectory,
) -> int:
    log_path = config.store.path.parent / "edgectl.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log_file:
        configure(config.logging.level, "json", stream=log_file)
        console = Console()
        console.print(
            f"[bold]edgectl demo[/] station {config.station.id}: "
            f"{len(config.pumps)} pumps on {len(config.lines)} lines ({_protocols(config)}), "
            f"mode {config.authorization.mode}"
        )
        # Paths are printed whole on their lines, to be copied.
        console.print(f"daemon log: {log_path}", soft_wrap=True)
        console.print(f"sales database: {config.store.path}", soft_wrap=True)
        if run.own_store:
            console.print(
                f"(another demo holds {run.shared_store}: this one keeps its sales in its run "
                "directory, removed when it stops)",
                soft_wrap=True,
            )
        console.print(f"run directory (links, socket): {run.path}", soft_wrap=True)
        console.print("[bold]the technician CLI against this demo[/], from another terminal:")
        for command in ("status", "watch", "sales"):
            # Unwrapped and unstyled, to be copied as it is.
            console.print(f"  {run.cli_command(command)}", soft_wrap=True, markup=False)
        if cloud is not None:
            console.print(cloud.banner(args.order_every))
        try:
            return asyncio.run(_run(config, args, console, instance, cloud))
        except EdgectlError as exc:
            console.print(f"edgectl: {exc}")
            return 1


async def _run(
    config: Config,
    args: argparse.Namespace,
    console: Console,
    instance: InstanceLock,
    cloud: _DemoCloud | None = None,
) -> int:
    from edgectl.cli.simulate import build_networks, build_simulators
    from edgectl.daemon import Daemon

    # The simulated pumps keep their electronic totals between demo runs, like real ones:
    # otherwise the daemon would rightly alarm that totals went backwards.
    totals = _known_totals(config.store.path)
    # The dispensers on IP (IFSF) are built first, so that a line that cannot be built
    # leaves no pty behind; they start on the loop below.
    networks = build_networks(config, totals=totals)
    lines = build_simulators(config, totals=totals)
    for sim in lines:
        console.print(f"simulated line {sim.name}: {sim.link.link if sim.link else '?'}")
    sims = [*lines, *networks]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tank_sims = _tank_simulators(config, console)
    daemon = Daemon(config, instance=instance)
    plumbing = _Plumbing(config, sims, tank_sims)
    started = time.monotonic()
    first_sale = max((r["id"] for r in _latest_sales(config.store.path, 1)), default=0)
    client: CloudClient | None = None
    started_networks: list[Any] = []
    try:
        for network in networks:
            await network.start()
            started_networks.append(network)
            for text in network.describe():
                console.print(f"simulated line {text}")
        if cloud is not None:
            client = await cloud.connect()
        async with asyncio.TaskGroup() as tg:
            daemon_task = tg.create_task(daemon.run(install_signals=False), name="daemon")
            plumbing_task = tg.create_task(plumbing.run(), name="plumbing")
            customers = [
                tg.create_task(
                    _simulation(config, sim.name).random_customers(
                        sim,
                        # With a broker, pumps kept for cloud orders see no walk-in customer.
                        None if cloud is None else cloud.walk_in_pumps(sim),
                        args.customer_interval * len(sims),
                        None if args.seed is None else args.seed + i,
                    ),
                    name=f"customers-{sim.name}",
                )
                for i, sim in enumerate(sims)
            ]
            if cloud is not None and client is not None:
                customers.append(
                    tg.create_task(
                        cloud.run(daemon, sims, client, args, console), name="cloud-orders"
                    )
                )
            if args.duration is not None:
                loop.call_later(args.duration, stop.set)
            if args.no_ui:
                await stop.wait()
            else:

                def view() -> Group:
                    return _render(daemon, config, cloud, height=console.size.height)

                with Live(view(), console=console, refresh_per_second=4) as live:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.25):
                                await stop.wait()
                        live.update(view())
            console.print("stopping: finishing sales in progress…")
            for task in customers:
                task.cancel()
            daemon.request_stop()
            await daemon_task
            plumbing_task.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if client is not None:
            await client.close()
        for sim in lines:
            sim.stop()
        for network in started_networks:  # after the daemon: it read their last sales
            await network.stop()
        for _farm, console_sim in tank_sims.values():
            console_sim.stop()
    _summary(
        console,
        config,
        time.monotonic() - started,
        (plumbing.deliveries, plumbing.drops_under_way()),
        first_sale,
    )
    if cloud is not None:
        console.print(cloud.summary(_order_statuses(config.store.path)))
    return 0


def _render(
    daemon: Any, config: Config, cloud: _DemoCloud | None = None, *, height: int = 24
) -> Group:
    """The live view: pumps, tanks, the latest sales (as many as the screen holds), the cloud's
    orders; the tables fit the terminal's width as the CLI's do, times in local time."""
    from edgectl.cli.pumps import pumps_table
    from edgectl.control.server import pump_json

    views = [pump_json(view, config) for view in daemon.station.snapshot()]
    parts: list[Any] = [pumps_table(views, f"{config.station.id} — pumps")]
    used = len(views) + 3  # a table's title, heading and rule
    if config.tanks:
        parts.append(_tanks_table(config))
        used += len(config.tanks) + 3
    orders = None
    if cloud is not None:
        orders = cloud.table()
        used += orders.row_count + 4  # and its caption
    shown = max(3, height - used - 3)
    rows = _latest_sales(config.store.path, shown)
    parts.append(
        output.table(
            "latest sales",
            ("id", "pump", "nozzle", "grade", "volume", "amount", "price", "recorded"),
            [
                (
                    r["id"],
                    r["pump"],
                    r["nozzle"],
                    r["grade"],
                    r["volume"],
                    r["amount"],
                    r["unit_price"],
                    output.local_time(r["recorded_at"]),
                )
                for r in rows
            ],
            right=("id", "pump", "nozzle", "volume", "amount", "price"),
            optional=("nozzle", "id"),
        )
    )
    if orders is not None:
        parts.append(orders)
    return Group(*parts)


def _simulation(config: Config, line: str) -> registry.DispenserSimulation:
    """The pump simulator of a line's protocol (the registry's)."""
    return registry.lookup(config.line(line).protocol).dispenser_simulation()


def _tank_simulators(config: Config, console: Console) -> dict[str, tuple[Any, Any]]:
    """A console simulator on each pty gauge whose protocol has one (a Veeder-Root TLS
    console), over tank physics built from the configured tanks (the first nearly due for a
    tanker, the others 60 % full); by gauge name: (TankFarm, the console's simulator)."""
    sims: dict[str, tuple[Any, Any]] = {}
    for gauge in config.gauges:
        entry = registry.lookup(gauge.protocol)
        if not entry.simulated or gauge.port is None:
            continue
        tanks: list[registry.TankPlan] = []
        for tank in config.tanks_on(gauge.name):
            points = (
                [(float(h), float(v)) for h, v in tank.chart.points]
                if tank.chart is not None
                else [(0.0, 0.0), (float(tank.height_mm), float(tank.capacity_l))]
            )
            # The first tank starts just above the tanker's threshold, so a delivery comes
            # within the first minutes of a demo; the others at 60 %.
            share = _Plumbing.LOW_SHARE + 0.001 if not tanks else 0.6
            tanks.append(
                registry.TankPlan(
                    gauge_tank=tank.gauge_tank,
                    chart=points,
                    product=tank.grade,
                    density15=float(tank.density_15),
                    product_l=float(tank.capacity_l) * share,
                )
            )
        plan = registry.GaugePlan(
            name=gauge.name,
            port=Path(gauge.port),
            tanks=tanks,
            security_code=gauge.security_code or None,
            terminator=gauge.terminator_bytes,
            etx=gauge.etx,
        )
        farm, console_sim = entry.gauge_simulation().console(plan)
        console.print(f"simulated tank gauge {gauge.name}: {console_sim.link.link}")
        sims[gauge.name] = (farm, console_sim)
    return sims


class _Plumbing:
    """Connects the simulated pumps to the simulated tanks, as pipes do: what each nozzle's
    meter counts (its electronic volume total) is drawn from a tank of its grade while the
    fill runs, so tank levels fall during long fills, not at their end. A tanker comes to a
    tank that falls below a quarter of its capacity and fills it back to 80 % over a few
    minutes, so the demo shows deliveries too (seen by the gauge and reported by it)."""

    PERIOD_S = 0.5
    LOW_SHARE = 0.25
    REFILL_SHARE = 0.8
    DROP_S = 45.0

    def __init__(
        self, config: Config, sims: list[Any], tank_sims: dict[str, tuple[Any, Any]]
    ) -> None:
        self.config = config
        self.tank_sims = tank_sims
        self.meters: list[tuple[Any, int, Any, int, float]] = []  # pump, nozzle, farm, tank, scale
        self.deliveries = 0
        by_line = {sim.name: sim for sim in sims}
        for pump in config.pumps:
            sim = by_line.get(pump.line)
            if sim is None:
                continue
            for nozzle, grade_id in pump.nozzles.items():
                tank = next(
                    (t for t in config.tanks_for_grade(grade_id) if t.gauge in tank_sims), None
                )
                if tank is None:
                    continue
                scale = 10.0 ** config.grade(grade_id).volume_decimals
                self.meters.append(
                    (
                        sim.pump(pump.address),
                        nozzle,
                        tank_sims[tank.gauge][0],
                        tank.gauge_tank,
                        scale,
                    )
                )
        self._last = {(id(p), n): p.totals(n)[0] for p, n, *_ in self.meters}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.PERIOD_S)
            self.step()

    def step(self) -> None:
        for pump, nozzle, farm, tank, scale in self.meters:
            total = pump.totals(nozzle)[0]
            moved = total - self._last[(id(pump), nozzle)]
            self._last[(id(pump), nozzle)] = total
            if moved > 0:
                farm.draw(tank, moved / scale)
        for farm, _console in self.tank_sims.values():
            for tank in farm.tanks:
                if tank.delivery_in_progress:
                    continue
                capacity = tank.spec.capacity_l
                if tank.volume_l < self.LOW_SHARE * capacity:
                    tank.deliver(self.REFILL_SHARE * capacity - tank.volume_l, self.DROP_S)
                    self.deliveries += 1

    def drops_under_way(self) -> int:
        """Tanker drops still flowing: the gauge records a delivery once its drop ends."""
        return sum(
            tank.delivery_in_progress
            for farm, _console in self.tank_sims.values()
            for tank in farm.tanks
        )


def _tanks_table(config: Config) -> output.Fitted:
    figures = ("level mm", "product L", "15 °C L", "ullage L", "°C", "water mm")
    latest = {int(r["tank"]): r for r in _tank_latest(config.store.path)}
    rows = []
    for tank in config.tanks:
        row = latest.get(tank.number)
        if row is None:
            rows.append((tank.number, tank.grade, *([None] * len(figures))))
            continue
        keys = ("height_mm", "product_l", "net_l", "ullage_l", "temperature_c", "water_mm")
        rows.append((tank.number, tank.grade, *(row[k] for k in keys)))
    return output.table(
        "tanks",
        ("tank", "grade", *figures),
        rows,
        right=("tank", *figures),
        optional=("water mm", "°C"),
        decimals=dict.fromkeys(figures, 1),
    )


def _read(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows from the running demo's store, read-only; none while it is new or busy (the
    panels show what there is and try again on the next refresh)."""
    try:
        db = open_read_only(path)
    except StoreError:
        return []
    try:
        db.row_factory = sqlite3.Row
        return list(db.execute(sql, params))
    except sqlite3.Error:
        return []
    finally:
        db.close()


def _tank_latest(path: Path) -> list[sqlite3.Row]:
    return _read(path, "SELECT * FROM tank_latest ORDER BY tank")


def _known_totals(path: Path) -> dict[int, dict[int, tuple[Decimal, Decimal]]]:
    """The nozzle totals of an earlier run, so the simulated pumps carry on from them."""
    totals: dict[int, dict[int, tuple[Decimal, Decimal]]] = {}
    for row in _read(path, "SELECT pump, nozzle, volume, amount FROM nozzle_totals"):
        totals.setdefault(row["pump"], {})[row["nozzle"]] = (
            Decimal(row["volume"]),
            Decimal(row["amount"]),
        )
    return totals


def _latest_sales(path: Path, limit: int) -> list[sqlite3.Row]:
    return _read(path, "SELECT * FROM sales ORDER BY id DESC LIMIT ?", (limit,))


def _protocols(config: Config) -> str:
    """The lines by protocol, as "wayne_dart: north, south; ifsf: east"."""
    by: dict[str, list[str]] = {}
    for line in config.lines:
        by.setdefault(line.protocol, []).append(line.name)
    return "; ".join(f"{protocol}: {', '.join(names)}" for protocol, names in by.items())


def _summary(
    console: Console,
    config: Config,
    elapsed: float,
    tankers: tuple[int, int],
    first_sale: int,
) -> None:
    """What the run did; `tankers`: the drops sent and those still under way; `first_sale`:
    the last sale's id in the store before it."""
    rows = _latest_sales(config.store.path, 1_000_000)
    console.print(
        f"demo ran {elapsed:.0f} s; the store now holds {len(rows)} sales ({config.store.path})"
    )
    protocol = {p.number: config.line(p.line).protocol for p in config.pumps}
    counts = dict.fromkeys(dict.fromkeys(protocol.values()), 0)
    for row in rows:
        if row["id"] > first_sale and row["pump"] in protocol:
            counts[protocol[row["pump"]]] += 1
    console.print(
        f"this run: {sum(counts.values())} sales ("
        + ", ".join(f"{p} {n}" for p, n in counts.items())
        + ")"
    )
    if config.tanks:
        deliveries = _read(config.store.path, "SELECT id FROM deliveries")
        sent, flowing = tankers
        to_come = max(0, sent - len(deliveries))
        note = ""
        if to_come:
            # A delivery is recorded once its drop has ended and the level has settled.
            note = f" ({to_come} to come: {flowing} still flowing, the rest settling)"
        console.print(
            f"tanks: {sent} tanker drops sent; {len(deliveries)} deliveries recorded{note}"
        )


# --------------------------------------------------------------------------- the run

# The config keys that hold a path, resolved against the config file's directory when
# relative: the run's config lives elsewhere, so they are made absolute in it.
_PATH_KEYS = frozenset(
    {
        "path",
        "backup_dir",
        "socket",
        "textfile",
        "ca_file",
        "cert_file",
        "key_file",
        "password_file",
        "public_key_file",
        "register_map",
        "chart_file",
    }
)


class _RunDirectory:
    """One demo run's own directory: its devices' pty links, its control socket, its metrics
    and the config the technician CLI reads to reach it (`EDGECTL_CONFIG=… edgectl status`).
    Two demos at once each have their own, so neither removes the other's links; the store is
    the configured one unless another demo holds it, then one in the run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config_path = path / "station.toml"
        self.own_store = False
        self.shared_store: Path | None = None

    @classmethod
    def create(cls) -> _RunDirectory:
        base = os.environ.get("XDG_RUNTIME_DIR")
        where = base if base and os.access(base, os.W_OK) else None
        return cls(Path(tempfile.mkdtemp(prefix="edgectl-demo-", dir=where)))

    def prepare(self, source: Path) -> tuple[Config, InstanceLock]:
        """The station of `source` with its simulated devices, socket and metrics moved into
        the run directory, written there as TOML, loaded back, and its store locked."""
        import tomllib

        from edgectl.instance import StoreInUseError

        config = load_config(source)  # the given file's own errors first, under its name
        with source.open("rb") as handle:
            data = tomllib.load(handle)
        _absolute_paths(data, source.parent.resolve())
        store = config.store.path
        try:
            # Before a simulator takes the lines' ptys or a broker starts: a demo on the
            # store of a running daemon would replace that daemon's pumps with its own.
            instance = InstanceLock.take(store)
        except StoreInUseError:
            if not _demo_holds(store):
                raise
            self.own_store, self.shared_store = True, store
            store = self.path / "edgectl.db"
            instance = InstanceLock.take(store)
        data.setdefault("store", {})["path"] = str(store)
        data.setdefault("control", {})["socket"] = str(self.path / "control.sock")
        if "textfile" in data.get("metrics", {}):
            data["metrics"]["textfile"] = str(self.path / "edgectl.prom")
        simulated = {"lines": "wayne_dart", "gauges": "veeder_root"}
        for section, protocol in simulated.items():
            for device in data.get(section, ()):
                if device.get("protocol", protocol) == protocol and "port" in device:
                    device["port"] = str(self.path / str(device["name"]))
        for line in data.get("lines", ()):
            if "port" not in line and config.line(str(line["name"])).protocol == "ifsf":
                line.update(_loopback_heartbeats())
        self.config_path.write_text(
            "# written by edgectl demo for this run: the CLI reads it to reach the demo\n"
            + _toml(data),
            encoding="utf-8",
        )
        try:
            return load_config(self.config_path), instance
        except BaseException:
            instance.release()
            raise

    def cli_command(self, command: str) -> str:
        """How to run `edgectl COMMAND` against this demo, as this process was started."""
        program = sys.argv[0]
        if Path(program).name != "edgectl":
            program = f"{sys.executable} -m edgectl"
        return f"EDGECTL_CONFIG={self.config_path} {program} {command}"

    def remove(self) -> None:
        """The run's files go with it; a store of its own too (its summary said where)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _loopback_heartbeats() -> dict[str, Any]:
    """An IFSF line's keys for this run: the controller's TCP server and heartbeat port and
    its simulated dispensers' heartbeat port, free ports on loopback, and the heartbeat sent
    there unicast (so the demo needs no broadcast and two demos never hear each other)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as theirs,
    ):
        ours.bind(("0.0.0.0", 0))
        theirs.bind(("0.0.0.0", 0))
        port, nodes = ours.getsockname()[1], theirs.getsockname()[1]
    return {"tcp_port": 0, "heartbeat_port": port, "heartbeat_to": [f"127.0.0.1:{nodes}"]}


def _demo_holds(store: Path) -> bool:
    """Is `store` held by another `edgectl demo` (not by a daemon of a real station, whose
    store a demo must never touch: it is refused as before)?"""
    try:
        pid = int(lock_path(store).read_text().split()[0])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False
    return b"demo" in argv


def _absolute_paths(data: dict[str, Any], base: Path) -> None:
    """Every relative path value of a loaded config made absolute against `base`."""
    for key, value in data.items():
        if isinstance(value, dict):
            _absolute_paths(value, base)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _absolute_paths(item, base)
        elif key in _PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
            data[key] = str((base / value).resolve())


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """A loaded config written back as TOML (the value types tomllib gives a config)."""
    plain = [(k, v) for k, v in data.items() if not _is_table(v) and not _is_tables(v)]
    lines = [f"{_key(k)} = {_value(v)}" for k, v in plain]
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        name = f"{prefix}{_key(key)}"
        if _is_table(value):
            out += f"\n[{name}]\n" + _toml(value, f"{name}.")
        elif _is_tables(value):
            for item in value:
                out += f"\n[[{name}]]\n" + _toml(item, f"{name}.")
    return out


def _is_table(value: Any) -> bool:
    """A table written as a [section]; one keyed by numbers (nozzles = { 1 = "92" }) and an
    empty one are written inline."""
    return isinstance(value, dict) and bool(value) and not all(k.isdigit() for k in value)


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"no TOML for {type(value).__name__}")


# --------------------------------------------------------------------------- pay-at-pump

_DEMO_KEY_ID = "demo-cloud"
_FINAL = frozenset({"completed", "expired", "cancelled", "failed"})
_SHOWN_ORDERS = 6
_RETRY_S = 1.0  # no pay-at-pump pump idle: look again this soon


def _quiet(text: str) -> None:
    """Where order news goes while the live view shows them instead."""


@dataclass
class _DemoOrder:
    """One order the demo sent, as the cloud knows it."""

    order_id: str
    pump: int
    preset: str
    answer: str = "sending…"
    status: str = "-"
    sale: str = ""


@dataclass
class _DemoCloud:
    """The demo playing the cloud: a broker, a signing key, pumps kept for its orders."""

    config: Config
    broker: str
    host: str
    port: int
    key_path: Path
    pay_at_pump: tuple[int, ...]
    orders: list[_DemoOrder] = field(default_factory=list)
    busy: set[int] = field(default_factory=set)
    note: str = ""

    @classmethod
    def prepare(cls, config: Config, host: str, port: int, *, private: bool) -> _DemoCloud:
        """The station config pointed at the broker, trusting the demo's signing key (made
        once, next to the store)."""
        from edgectl.cloud.signing import generate_key_pair, load_private_key
        from edgectl.config import CloudConfig, CommandKey

        key_dir = config.store.path.parent / "demo-cloud-keys"
        key_path = key_dir / f"{_DEMO_KEY_ID}.key"
        if not key_path.exists():
            generate_key_pair(key_dir, _DEMO_KEY_ID)
        public = load_private_key(key_path).public_key().public_bytes_raw()
        base = config.cloud or CloudConfig(host=host, client_id=f"edgectl-{config.station.id}")
        cloud = replace(
            base,
            host=host,
            port=port,
            tls=False,  # a local demo broker: no TLS, no login
            ca_file=None,
            cert_file=None,
            key_file=None,
            username=None,
            password=None,
            command_keys=(
                CommandKey(id=_DEMO_KEY_ID, public_key=public),
                *(k for k in base.command_keys if k.id != _DEMO_KEY_ID),
            ),
        )
        # The last pump of each line takes cloud orders; walk-in customers use the others.
        pay_at_pump = tuple(
            sorted(
                {pumps[-1].number for line in config.lines if (pumps := config.pumps_on(line.name))}
            )
        )
        where = f"{host}:{port}" + (" (private mosquitto)" if private else "")
        return cls(
            config=replace(config, cloud=cloud),
            broker=where,
            host=host,
            port=port,
            key_path=key_path,
            pay_at_pump=pay_at_pump,
        )

    def banner(self, every: float) -> str:
        pumps = ", ".join(str(n) for n in self.pay_at_pump)
        return (
            f"cloud: broker {self.broker}; a pay-at-pump order every {every:g} s on pump(s) "
            f"{pumps} (walk-in customers use the others); signing key {self.key_path}"
        )

    def walk_in_pumps(self, sim: Any) -> list[Any]:
        kept = {
            self.config.pump(n).address
            for n in self.pay_at_pump
            if self.config.pump(n).line == sim.name
        }
        return [pump for pump in sim.pumps if pump.address not in kept]

    async def connect(self) -> CloudClient:
        from edgectl.cloud.client import Broker, CloudClient
        from edgectl.cloud.signing import load_private_key

        cloud = self.config.cloud
        assert cloud is not None
        client = CloudClient(
            Broker(self.host, self.port),
            self.config.station.id,
            prefix=cloud.topic_prefix,
            key=load_private_key(self.key_path),
            key_id=_DEMO_KEY_ID,
        )
        await client.connect()
        return client

    async def run(
        self,
        daemon: Daemon,
        sims: list[Any],
        client: CloudClient,
        args: argparse.Namespace,
        console: Console,
    ) -> None:
        """Send an order every `--order-every` seconds to an idle pay-at-pump pump and send a
        customer to it; follow every order on evt/order. Never raises for a cloud problem:
        the panel says what went wrong and the rest of the demo goes on."""
        from edgectl.errors import CloudError

        rng = random.Random(args.seed)
        pumps = {
            p.number: sim.pump(p.address)
            for sim in sims
            for p in self.config.pumps_on(sim.name)
            if p.number in self.pay_at_pump
        }
        say: Callable[[str], None] = console.print if args.no_ui else _quiet
        try:
            async with (
                client.follow([client.topics.event("order")]) as events,
                asyncio.TaskGroup() as tg,
            ):
                tg.create_task(self._track(events, say), name="cloud-order-events")
                assert daemon.cloud is not None
                await daemon.cloud.session.wait_connected()
                while True:
                    pump = self._idle_pump(daemon, pumps, rng)
                    if pump is None:
                        # At start the pumps are not read yet; later they may all be in use.
                        self.note = "no pay-at-pump pump is idle: the next order waits"
                        await asyncio.sleep(_RETRY_S)
                        continue
                    self.note = ""
                    await self._order(client, pump, pumps[pump], rng, tg, say)
                    await asyncio.sleep(args.order_every)
        except CloudError as exc:
            self.note = f"cloud link lost: {exc}"
            say(f"cloud: {self.note}")

    def _idle_pump(self, daemon: Daemon, pumps: dict[int, Any], rng: random.Random) -> int | None:
        from edgectl.forecourt.fuelling_point import FPState

        idle = [
            view.number
            for view in daemon.station.snapshot()
            if view.number in pumps
            and view.number not in self.busy
            and view.online
            and view.state is FPState.IDLE
            and view.authorization_id is None
            and pumps[view.number].nozzle_out is None
        ]
        return rng.choice(idle) if idle else None

    async def _order(
        self,
        client: CloudClient,
        number: int,
        sim_pump: Any,
        rng: random.Random,
        tg: asyncio.TaskGroup,
        say: Callable[[str], None],
    ) -> None:
        from edgectl.cloud.contract import AuthorizeData
        from edgectl.errors import CloudError

        pump = self.config.pump(number)
        nozzle = rng.choice(sorted(pump.nozzles))
        # Small enough to watch a fill end: 120.00 is about 16 L, some 30 s at the sim's flow.
        amount = Decimal(rng.randrange(20, 130, 10)).quantize(Decimal("0.01"))
        currency = self.config.station.currency
        order = _DemoOrder(
            order_id=f"o-demo-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}",
            pump=number,
            preset=f"{amount} {currency} {pump.nozzles[nozzle]}",
        )
        self.orders.append(order)
        self.busy.add(number)
        data = AuthorizeData(
            order_id=order.order_id,
            pump=number,
            preset_type="amount",
            preset_value=amount,
            currency=currency,
            grades=(pump.nozzles[nozzle],),
            payment_method=rng.choice(("wechat", "alipay", "unionpay")),
        )
        try:
            message = await client.send("authorize", data)
        except CloudError as exc:
            if exc.code in ("connection_lost", "closed"):
                raise
            self.busy.discard(number)
            order.answer = f"no answer ({exc.code})"
            say(f"cloud: order {order.order_id} pump {number}: {exc}")
            return
        result = message.get("data") or {}
        order.answer = f"{result.get('status')} ({result.get('code')})"
        say(
            f"cloud: order {order.order_id} pump {number} {order.preset}: {order.answer} "
            f"{result.get('message')}"
        )
        if result.get("status") != "accepted":
            self.busy.discard(number)
            return
        tg.create_task(self._customer(number, sim_pump, nozzle, rng), name=f"paying-{number}")

    async def _customer(self, number: int, sim_pump: Any, nozzle: int, rng: random.Random) -> None:
        """The customer who paid in the app: walks to the released pump and fuels."""
        try:
            line = self.config.pump(number).line
            await _simulation(self.config, line).paying_customer(sim_pump, nozzle, rng)
        finally:
            self.busy.discard(number)

    async def _track(self, events: Follower, say: Callable[[str], None]) -> None:
        async for _topic, message in events:
            data = message.get("data") or {}
            for order in self.orders:
                if order.order_id != data.get("order_id"):
                    continue
                order.status = str(data.get("status"))
                if data.get("reason"):
                    order.status += f" ({data['reason']})"
                sale = data.get("sale")
                if isinstance(sale, dict):
                    order.sale = f"{sale.get('volume')} L, {sale.get('amount')} {sale['currency']}"
                if data.get("status") in _FINAL:
                    say(f"cloud: order {order.order_id} pump {order.pump}: {order.status}")

    def table(self) -> output.Fitted:
        table = output.table(
            f"cloud — pay-at-pump orders via {self.broker}",
            ("order", "pump", "preset", "answer", "status", "sale"),
            [
                (o.order_id, o.pump, o.preset, o.answer, o.status, o.sale or None)
                for o in self.orders[-_SHOWN_ORDERS:]
            ],
            right=("pump",),
            optional=("answer", "sale"),
        )
        table.caption = self.note or None
        return table

    def summary(self, stored: dict[str, str]) -> str:
        """What the cloud saw, then what the station's store says of the same orders (fills
        cut short by the stop end as sales after the cloud stopped listening)."""
        accepted = sum(1 for o in self.orders if o.answer.startswith("accepted"))
        ended: dict[str, int] = {}
        for order in self.orders:
            if order.order_id in stored:
                ended[stored[order.order_id]] = ended.get(stored[order.order_id], 0) + 1
        in_store = ", ".join(f"{n} {status}" for status, n in sorted(ended.items())) or "none"
        return (
            f"pay-at-pump: {len(self.orders)} orders sent, {accepted} accepted; "
            f"in the store: {in_store}"
        )


def _order_statuses(path: Path) -> dict[str, str]:
    return {row["order_id"]: row["status"] for row in _read(path, "SELECT * FROM orders")}


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


class _PrivateBroker:
    """A mosquitto for this demo only: 127.0.0.1, a free port, anonymous, nothing kept."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="edgectl-demo-broker-"))
        self.log_path = self.directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> tuple[str, int]:
        from edgectl.errors import CloudError

        host = "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                (
                    # As root, mosquitto would switch to user "mosquitto", who cannot write here.
                    f"user {getpass.getuser()}",
                    f"listener {port} {host}",
                    "allow_anonymous true",
                    # Without it every small MQTT packet waits for Nagle's algorithm.
                    "set_tcp_nodelay true",
                    "persistence false",
                    f"log_dest file {self.log_path}",
                    "",
                )
            ),
            encoding="utf-8",
        )
        self._process = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while True:
            if self._process.poll() is not None:
                raise CloudError(
                    f"mosquitto did not start (exit status {self._process.returncode}): "
                    f"{self._last_log_line()}"
                )
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return host, port
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise CloudError(f"mosquitto did not listen on {host}:{port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no log"
