"""`edgectl demo`: a simulated station (pumps on ptys, random customers) run by the real daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from edgectl.config import Config, load_config
from edgectl.errors import EdgectlError
from edgectl.logs import configure

EXAMPLE = """examples:
  edgectl demo                              # config/demo.toml, until Ctrl-C
  edgectl demo --duration 60 --seed 7       # one reproducible minute
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="run a simulated station with the real daemon",
        description="Start simulated Wayne DART pumps on pseudo-terminals, random customers, "
        "and the edgectl daemon against them; show live pump states and sales. "
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
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except EdgectlError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    log_path = config.store.path.parent / "edgectl.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log_file:
        configure(config.logging.level, "json", stream=log_file)
        console = Console()
        console.print(
            f"[bold]edgectl demo[/] station {config.station.id}: "
            f"{len(config.pumps)} pumps on {len(config.lines)} lines, "
            f"mode {config.authorization.mode}"
        )
        console.print(f"daemon log: {log_path}   sales database: {config.store.path}")
        try:
            return asyncio.run(_run(config, args, console))
        except EdgectlError as exc:
            console.print(f"edgectl: {exc}")
            return 1


async def _run(config: Config, args: argparse.Namespace, console: Console) -> int:
    from drivers.wayne_dart.sim import RandomCustomers
    from edgectl.cli.simulate import build_simulators
    from edgectl.daemon import Daemon

    # The simulated pumps keep their electronic totals between demo runs, like real ones:
    # otherwise the daemon would rightly alarm that totals went backwards.
    sims = build_simulators(config, totals=_known_totals(config.store.path))
    for sim in sims:
        console.print(f"simulated line {sim.name}: {sim.link.link if sim.link else '?'}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(config)
    started = time.monotonic()
    try:
        async with asyncio.TaskGroup() as tg:
            daemon_task = tg.create_task(daemon.run(install_signals=False), name="daemon")
            customers = [
                tg.create_task(
                    RandomCustomers(
                        sim,
                        mean_interval_s=args.customer_interval * len(sims),
                        seed=None if args.seed is None else args.seed + i,
                    ).run(),
                    name=f"customers-{sim.name}",
                )
                for i, sim in enumerate(sims)
            ]
            if args.duration is not None:
                loop.call_later(args.duration, stop.set)
            if args.no_ui:
                await stop.wait()
            else:
                with Live(_render(daemon, config), console=console, refresh_per_second=4) as live:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.25):
                                await stop.wait()
                        live.update(_render(daemon, config))
            console.print("stopping: finishing sales in progress…")
            for task in customers:
                task.cancel()
            daemon.request_stop()
            await daemon_task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for sim in sims:
            sim.stop()
    _summary(console, config, time.monotonic() - started)
    return 0


def _render(daemon: Any, config: Config) -> Group:
    pumps = Table(title=f"{config.station.id} — pumps", expand=False)
    for column in (
        "pump",
        "line",
        "online",
        "state",
        "nozzle",
        "grade",
        "price",
        "volume",
        "amount",
        "auth",
        "sales",
    ):
        pumps.add_column(column, justify="right" if column in ("volume", "amount") else "left")
    for view in daemon.station.snapshot():
        pumps.add_row(
            str(view.number),
            f"{view.line}/0x{view.address:02X}",
            "[green]yes[/]" if view.online else "[red]no[/]",
            view.state.name,
            f"{view.nozzle}{' out' if view.nozzle_out else ''}" if view.nozzle else "-",
            view.grade or "-",
            str(view.unit_price) if view.unit_price is not None else "-",
            str(view.volume),
            str(view.amount),
            str(view.authorization_id or "-"),
            str(view.sales),
        )
    sales = Table(title="latest sales", expand=False)
    for column in ("id", "pump", "nozzle", "grade", "volume", "amount", "price", "recorded"):
        sales.add_column(column)
    for row in _latest_sales(config.store.path, 8):
        sales.add_row(
            *(
                str(row[k])
                for k in (
                    "id",
                    "pump",
                    "nozzle",
                    "grade",
                    "volume",
                    "amount",
                    "unit_price",
                    "recorded_at",
                )
            )
        )
    return Group(pumps, sales)


def _known_totals(path: Path) -> dict[int, dict[int, tuple[Decimal, Decimal]]]:
    totals: dict[int, dict[int, tuple[Decimal, Decimal]]] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return totals
    try:
        for pump, nozzle, volume, amount in db.execute(
            "SELECT pump, nozzle, volume, amount FROM nozzle_totals"
        ):
            totals.setdefault(pump, {})[nozzle] = (Decimal(volume), Decimal(amount))
    except sqlite3.Error:
        pass  # a new store: the pumps start from zero
    finally:
        db.close()
    return totals


def _latest_sales(path: Path, limit: int) -> list[sqlite3.Row]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return []
    try:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM sales ORDER BY id DESC LIMIT ?", (limit,)))
    except sqlite3.Error:
        return []
    finally:
        db.close()


def _summary(console: Console, config: Config, elapsed: float) -> None:
    rows = _latest_sales(config.store.path, 1_000_000)
    console.print(
        f"demo ran {elapsed:.0f} s; the store now holds {len(rows)} sales ({config.store.path})"
    )
