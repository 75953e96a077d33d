"""Wires the station from its config and runs it under one TaskGroup until told to stop."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

from drivers import registry
from drivers.base import DispenserEvent, DispenserLine
from edgectl.cloud import contract
from edgectl.cloud.messages import ContractMessages
from edgectl.config import Config, LineConfig
from edgectl.control.server import ControlServer
from edgectl.devices import DeviceMonitor
from edgectl.errors import ConfigError, StoreError
from edgectl.instance import InstanceLock
from edgectl.logs import get_logger
from edgectl.maintenance import Maintenance
from edgectl.metrics import StationMetrics
from edgectl.sdnotify import Notifier
from edgectl.station import Station
from edgectl.store.store import Store
from edgectl.supervisor import Supervisor, forecourt_summary, progress_of
from edgectl.tank_service import TankService, WallClock

SHUTDOWN_GRACE_S = 15.0  # time given to sales being committed when asked to stop
FLUSH_GRACE_S = 3.0  # then time given to the outbox to reach the broker


def build_line(
    line: LineConfig, config: Config, emit: Callable[[DispenserEvent], None]
) -> DispenserLine:
    """One driver per configured line; the protocol's registry entry builds it."""
    try:
        entry = registry.lookup(line.protocol, "dispenser")
    except registry.UnknownProtocol:
        raise ConfigError(f"lines.{line.name}.protocol: no driver for {line.protocol!r}") from None
    return entry.build_line(line, config.pumps_on(line.name), emit)


class CloudLink:
    """The MQTT session, the command handler and the outbox publisher, built from [cloud]."""

    def __init__(self, config: Config, station: Station) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from edgectl.cloud.commands import CommandHandler
        from edgectl.cloud.publisher import OutboxPublisher
        from edgectl.cloud.session import CloudSession

        cloud = config.cloud
        assert cloud is not None
        store = station.store
        self.started = time.monotonic()
        self.station = station
        self.handler = CommandHandler(
            station,
            keys={
                k.id: Ed25519PublicKey.from_public_bytes(k.public_key) for k in cloud.command_keys
            },
            clock_skew_s=cloud.clock_skew_s,
        )
        self.session = CloudSession(
            cloud,
            config.station.id,
            on_command=self.handler.handle,
            heartbeat=self._heartbeat,
            on_connected=station.republish_retained,
        )
        self.publisher = OutboxPublisher(
            session=self.session,
            topics=self.session.topics,
            station=config.station.id,
            fetch=lambda cursors, limit: station.db_quiet(store.outbox_after, cursors, limit),
            # "backend": a guaranteed row waits, sent, for the backend's ack (docs/mqtt.md).
            delete=lambda seqs: station.db_quiet(
                store.outbox_sent if cloud.delivery == "backend" else store.outbox_delete, seqs
            ),
            epoch=store.epoch,
            window=cloud.max_inflight,
        )
        station.on_outbox = self.publisher.wake
        self.handler.on_replay = self.publisher.rewind
        if cloud.delivery == "broker":
            # Rows a former delivery = "backend" kept for the backend: the broker took them.
            try:
                forgotten = store.outbox_forget_sent()
            except StoreError as exc:  # kept: the next start releases them
                station.log.warning("outbox_sent_rows_kept", error=str(exc))
            else:
                if forgotten:
                    station.log.info("outbox_sent_rows_released", rows=forgotten)

    async def _heartbeat(self) -> bytes:
        depth = await self.station.db_quiet(self.station.store.outbox_depth)
        return contract.encode(
            contract.envelope(
                "heartbeat",
                self.station.config.station.id,
                0,
                contract.timestamp(datetime.now(UTC)),
                contract.heartbeat_data(int(time.monotonic() - self.started), depth),
            )
        )

    async def purge_inbox(self) -> None:
        while True:
            await self.handler.purge()
            await asyncio.sleep(3600)

    async def flush(self, timeout: float) -> None:
        """Give the outbox a moment to reach the broker before the session closes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.session.connected:
            if await self.station.db_quiet(self.station.store.outbox_depth) == 0:
                return
            await asyncio.sleep(0.05)


class Daemon:
    """The running station: lines, station workers, the cloud link, and an orderly stop."""

    def __init__(
        self,
        config: Config,
        *,
        wall_clock: WallClock | None = None,
        instance: InstanceLock | None = None,
    ) -> None:
        """`wall_clock` is the tank service's time of day (its midnight), for tests;
        `instance` the store's lock when the caller took it already (the demo does)."""
        self.config = config
        self.log = get_logger(station=config.station.id)
        # One daemon per store, decided before the store, a serial line or the cloud link is
        # opened: a second daemon stops here with StoreInUseError naming the first.
        self.instance = instance or InstanceLock.take(config.store.path)
        # Refuses, with a typed StoreError naming the cause, a store that is another
        # station's, damaged, newer, or that cannot be written (permissions, a full disk).
        self.store = Store(
            config.store.path,
            # Without a cloud link the outbox still keeps events for when one is configured,
            # bounded the same way (telemetry thinned first, sales never dropped).
            outbox_max_rows=config.cloud.outbox_max_rows if config.cloud else 100_000,
            station_id=config.station.id,
            messages=ContractMessages(),
        )
        self.instance.require()
        self._emit_target: Station | None = None
        self.lines: dict[str, DispenserLine] = {
            line.name: build_line(line, config, self._emit) for line in config.lines
        }
        self.station = Station(config, self.store, self.lines)
        self._emit_target = self.station
        self.cloud = CloudLink(config, self.station) if config.cloud is not None else None
        # No [[gauges]]: no tank service, nothing runs for tanks.
        self.tanks = TankService.from_config(config, self.station, clock=wall_clock)
        # Alarms, logs and history of the lines, pumps and gauges (issue 11).
        self.devices = DeviceMonitor(
            config, self.station, self.lines, self.tanks.gauges if self.tanks is not None else {}
        )
        if self.tanks is not None:
            self.tanks.on_gauge_event = self.devices.on_gauge_event
        self.control = ControlServer(self, config.control)
        self.maintenance = Maintenance(config, self.station)
        # Prometheus metrics: a textfile for node_exporter ([metrics]), `edgectl metrics`.
        self.metrics = StationMetrics(self)
        self.store.on_commit = self.metrics.store_commit.observe
        self.station.on_order_confirmed = self.metrics.order_latency.observe
        # Under systemd (Type=notify): READY, a STATUS line, watchdog pings (supervisor.py).
        self.notifier = Notifier.from_environ()
        self.supervisor = (
            Supervisor(
                self.notifier,
                parts=progress_of("line", self.lines)
                | progress_of("gauge", self.tanks.gauges if self.tanks is not None else {}),
                store_call=lambda: self.station.db_quiet(self.store.outbox_depth),
                summary=lambda: forecourt_summary(self.station, self.tanks),
            )
            if self.notifier.enabled
            else None
        )
        self._started = time.monotonic()
        self._stop = asyncio.Event()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

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
                tasks.append(tg.create_task(self.control.run(), name="control"))
                tasks.append(tg.create_task(self.maintenance.run(), name="maintenance"))
                tasks.append(tg.create_task(self.devices.run(), name="devices"))
                tasks.append(tg.create_task(self.metrics.run(), name="metrics"))
                if self.tanks is not None:
                    tasks.append(tg.create_task(self.tanks.run(), name="tanks"))
                if self.cloud is not None:
                    tasks.append(tg.create_task(self.cloud.session.run(), name="cloud-session"))
                    tasks.append(tg.create_task(self.cloud.publisher.run(), name="cloud-outbox"))
                    tasks.append(tg.create_task(self.cloud.purge_inbox(), name="cloud-inbox"))
                if self.supervisor is not None:
                    # Last: it says READY once every task above runs.
                    tasks.append(tg.create_task(self.supervisor.run(), name="supervisor"))
                await self._stop.wait()
                if self.supervisor is not None:
                    self.supervisor.stopping()
                self.log.info("daemon_stopping")
                # Lines keep running while sales in progress are read and committed.
                await self.station.drain(SHUTDOWN_GRACE_S)
                if self.cloud is not None:
                    await self.cloud.flush(FLUSH_GRACE_S)
                    await self.cloud.session.stop()
                for task in tasks:
                    task.cancel()
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self.station.close()
            self.store.close()
            self.instance.release()
            self.notifier.close()
            self.log.info("daemon_stopped")
