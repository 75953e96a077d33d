"""Wires the station from its config and runs it under one TaskGroup until told to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from drivers.base import DispenserEvent, DispenserLine
from drivers.transport import SerialTransport
from drivers.wayne_dart.driver import DartLine, DartLineSettings, DartPumpSettings
from edgectl.config import Config, LineConfig
from edgectl.errors import ConfigError
from edgectl.logs import get_logger
from edgectl.station import Station
from edgectl.store.store import Store

SHUTDOWN_GRACE_S = 15.0  # time given to sales being committed when asked to stop


def build_line(
    line: LineConfig, config: Config, emit: Callable[[DispenserEvent], None]
) -> DispenserLine:
    """One driver per configured line; the protocol name picks the driver."""
    if line.protocol != "wayne_dart":
        raise ConfigError(f"lines.{line.name}.protocol: no driver for {line.protocol!r}")
    parity_bits = 0 if line.parity == "none" else 1
    settings = DartLineSettings(
        name=line.name,
        baud=line.baud,
        bits_per_char=1 + line.bytesize + parity_bits + line.stopbits,
        reply_timeout_s=line.reply_timeout_ms / 1000,
        retries=line.retries,
        offline_after=line.offline_after,
        poll_interval_s=line.poll_interval_ms / 1000,
    )
    pumps = [
        DartPumpSettings(
            address=p.address,
            nozzles=tuple(sorted(p.nozzles)),
            volume_decimals=p.volume_decimals,
            amount_decimals=p.amount_decimals,
            price_decimals=p.price_decimals,
        )
        for p in config.pumps_on(line.name)
    ]
    transport = SerialTransport(
        line.port,
        baud=line.baud,
        parity=line.parity,
        bytesize=line.bytesize,
        stopbits=line.stopbits,
        name=line.name,
    )
    return DartLine(settings, pumps, transport, emit)


class Daemon:
    """The running station: lines, station workers, and an orderly stop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.log = get_logger(station=config.station.id)
        self.store = Store(config.store.path)
        self._emit_target: Station | None = None
        self.lines: dict[str, DispenserLine] = {
            line.name: build_line(line, config, self._emit) for line in config.lines
        }
        self.station = Station(config, self.store, self.lines)
        self._emit_target = self.station
        self._stop = asyncio.Event()

    def _emit(self, event: DispenserEvent) -> None:
        if self._emit_target is not None:
            self._emit_target.on_dispenser_event(event)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self.log.info(
            "daemon_started",
            lines=len(self.lines),
            pumps=len(self.config.pumps),
            mode=self.config.authorization.mode,
            store=str(self.store.path),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(line.run(), name=f"line-{name}")
                    for name, line in self.lines.items()
                ]
                tasks.append(tg.create_task(self.station.run(), name="station"))
                await self._stop.wait()
                self.log.info("daemon_stopping")
                # Lines keep running while sales in progress are read and committed.
                await self.station.drain(SHUTDOWN_GRACE_S)
                for task in tasks:
                    task.cancel()
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self.station.close()
            self.store.close()
            self.log.info("daemon_stopped")
