"""Test kit: a station config on temp ptys, simulated DART lines, and the real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.wayne_dart.sim import DartLineSimulator, SimPump
from edgectl.config import Config, load_config
from edgectl.daemon import Daemon
from edgectl.tank_service import WallClock

GRADES = {"92": "7.45", "95": "7.93", "diesel": "7.10"}


def station_toml(
    tmp: Path,
    *,
    mode: str = "auto",
    pumps_per_line: int = 2,
    lines: int = 1,
    authorize_timeout_s: float = 60,
    extra: str = "",
) -> str:
    parts = [
        f"""
[station]
id = "TEST-01"
currency = "CNY"

[store]
path = "{tmp / "edgectl.db"}"

[authorization]
mode = "{mode}"
auto_preset_amount = "100.00"
authorize_timeout_s = {authorize_timeout_s}

[logging]
level = "debug"
format = "json"
{extra}
"""
    ]
    for grade, price in GRADES.items():
        parts.append(f'[[grades]]\nid = "{grade}"\nname = "{grade}"\nunit_price = "{price}"\n')
    number = 0
    for n in range(lines):
        parts.append(
            f'[[lines]]\nname = "l{n}"\nport = "{tmp / f"l{n}"}"\nprotocol = "wayne_dart"\n'
            "reply_timeout_ms = 150\n"
        )
        for p in range(pumps_per_line):
            number += 1
            parts.append(
                f'[[pumps]]\nnumber = {number}\nline = "l{n}"\naddress = {0x50 + p}\n'
                'nozzles = { 1 = "92", 2 = "95" }\n'
            )
    return "\n".join(parts)


def write_config(tmp: Path, **kw: Any) -> Path:
    path = tmp / "station.toml"
    path.write_text(station_toml(tmp, **kw))
    return path


def start_simulators(config: Config, *, flow_rate_lps: float = 5.0) -> dict[str, DartLineSimulator]:
    sims: dict[str, DartLineSimulator] = {}
    for line in config.lines:
        if line.protocol != "wayne_dart":
            continue  # an IFSF line's dispensers are on IP: tests start those themselves
        pumps = [
            SimPump(
                p.address,
                {n: int(config.grade(g).unit_price * 100) for n, g in p.nozzles.items()},
                flow_rate_lps=flow_rate_lps,
                totals={n: (100_000, 750_000) for n in p.nozzles},
            )
            for p in config.pumps_on(line.name)
        ]
        sim = DartLineSimulator(pumps, name=line.name)
        sim.serve_pty(Path(line.port))
        sims[line.name] = sim
    return sims


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


def rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, params)]
    finally:
        db.close()


class DaemonProcess:
    """`edgectl run` as a real child process, as systemd would run it."""

    def __init__(self, config: Path, log: Path, *, env: Mapping[str, str] | None = None) -> None:
        """`env`: variables set for it on top of ours (NOTIFY_SOCKET, as systemd gives)."""
        self.config = config
        self.log = log
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgectl", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    @property
    def exit_status(self) -> int | None:
        """None while it runs (or before its first start), else how it ended."""
        return None if self.proc is None else self.proc.poll()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class RunningStation:
    config: Config
    daemon: Daemon
    sims: dict[str, DartLineSimulator]
    task: asyncio.Task[None]

    def pump(self, number: int) -> SimPump:
        pump = self.config.pump(number)
        return self.sims[pump.line].pump(pump.address)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return rows(self.config.store.path, sql, params)

    def service(self, number: int) -> Any:
        return self.daemon.station.points[number]

    async def all_online(self) -> None:
        await until(
            lambda: all(
                s.online and s.status is not None for s in self.daemon.station.points.values()
            ),
            what="all pumps online",
        )

    async def quiet(self) -> None:
        """Every pump's start-up work done (state read, totals baseline, prices sent) and
        nothing in flight: a fault injected now hits the next command, not those."""

        def settled(s: Any) -> bool:
            return bool(
                s.idle.is_set()
                and s.queue.empty()
                and not s.lock.locked()
                and not s.decider.check_totals
                and not s.prices_pending()
            )

        await until(
            lambda: all(settled(s) for s in self.daemon.station.points.values()),
            what="pumps settled",
        )

    async def stop(self) -> None:
        self.daemon.request_stop()
        await asyncio.wait_for(self.task, 20)


@contextlib.asynccontextmanager
async def running_station(
    config_path: Path,
    sims: dict[str, DartLineSimulator] | None = None,
    *,
    wall_clock: WallClock | None = None,
    **sim_kw: Any,
) -> AsyncIterator[RunningStation]:
    config = load_config(config_path)
    own_sims = sims is None
    sims = sims if sims is not None else start_simulators(config, **sim_kw)
    daemon = Daemon(config, wall_clock=wall_clock)
    task = asyncio.create_task(daemon.run(install_signals=False))
    station = RunningStation(config, daemon, sims, task)
    try:
        await station.all_online()
        yield station
    finally:
        if not task.done():
            await station.stop()
        if own_sims:
            for sim in sims.values():
                sim.stop()


@contextlib.asynccontextmanager
async def daemon_running(config: Config, timeout: float = 15.0) -> AsyncIterator[Daemon]:
    """The daemon of `config` on this loop, yielded once every pump is online and has told
    its status; stopped on the way out (its devices are the caller's)."""
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        points = daemon.station.points.values()
        await until(
            lambda: all(p.online and p.status is not None for p in points),
            timeout,
            "every pump online",
        )
        yield daemon
    finally:
        daemon.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


def count_when_ready(db_path: Path, table: str) -> int:
    """Rows in a table, or -1 while the daemon has not created the database yet."""
    if not db_path.exists():
        return -1
    try:
        return len(rows(db_path, f"SELECT 1 FROM {table}"))
    except sqlite3.OperationalError:
        return -1
