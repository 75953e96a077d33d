"""Test kit for tank gauges in the running station: a simulated TLS console and its tank,
the pipe from a simulated pump to a simulated tank, a wall clock moved by hand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import TlsConsole, TlsConsoleSimulator
from drivers.wayne_dart.sim import SimPump
from tests.stationkit import until, write_config

TANK_TOML = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"
poll_interval_s = 0.5
reply_timeout_ms = 300
offline_after = 1

[[tanks]]
number = 1
name = "92"
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]
low_product_l = {low}
sudden_loss_l = 20000
"""


@contextlib.contextmanager
def console(tmp: Path, product_l: float) -> Iterator[tuple[SimTank, TlsConsoleSimulator]]:
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 737.0)
    tank = SimTank(spec, product_l=product_l)
    sim = TlsConsoleSimulator(TlsConsole(TankFarm([tank])))
    sim.serve_pty(tmp / "tls")
    try:
        yield tank, sim
    finally:
        sim.stop()


def config(tmp: Path, low: int = 1000) -> Path:
    return write_config(tmp, extra=TANK_TOML.format(port=tmp / "tls", low=low))


class Pipe:
    """The suction line from a simulated tank to a simulated pump: the litres the pump meters
    leave the tank as they flow, as on a real forecourt (not when the sale is recorded)."""

    def __init__(self, pump: SimPump, tank: SimTank) -> None:
        self.pump, self.tank = pump, tank
        self.drawn = Decimal(0)
        self._seen = pump.volume  # the pump's last fill, already out of the tank

    async def run(self) -> None:
        scale = Decimal(10) ** self.pump.volume_decimals
        while True:
            metered = self.pump.volume
            if metered < self._seen:
                self._seen = 0  # a new fill started from zero
            if metered > self._seen:
                litres = (metered - self._seen) / scale
                self.tank.draw(litres)
                self.drawn += litres
                self._seen = metered
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def piped(pump: SimPump, tank: SimTank) -> AsyncIterator[Pipe]:
    pipe = Pipe(pump, tank)
    task = asyncio.create_task(pipe.run())
    try:
        yield pipe
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class HandClock:
    """A wall clock the test moves by hand. A sleep ends once the clock has been moved past
    its end; `naps` counts the sleeps begun (the service's timer went round once more)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._moved = asyncio.Condition()
        self.naps = 0

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        end = self._now + timedelta(seconds=seconds)
        self.naps += 1
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= end)

    async def move_to(self, moment: datetime) -> None:
        naps = self.naps
        self._now = moment
        async with self._moved:
            self._moved.notify_all()
        # The timer woke (or had nothing to wake for) and is asleep again.
        await until(lambda: self.naps > naps, what=f"the timer after {moment}")
