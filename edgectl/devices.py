"""The station's devices as a technician follows them: pump lines, their pumps and tank gauges,
each with its state and why it is offline, its alarm (raised once, cleared once), one log line
when a fault starts and one when it ends, and its history kept in the store.

The drivers say what changed (a line's `LinkHealth`, a gauge's GaugeOnline / GaugeOffline); the
monitor turns that into alarms. A pump on a line that is down has no alarm of its own: the
line's names the cause. Error counters are sampled every few seconds in memory and written to
the store once a minute (and at once with a device's transition), never per error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.base import (
    DeviceFault,
    GaugeEvent,
    GaugeOffline,
    GaugeOnline,
    LineCounters,
    LinkHealth,
    TankGauge,
)
from edgectl.config import Config
from edgectl.errors import StoreError
from edgectl.logs import get_logger
from edgectl.station import Station
from edgectl.store.store import device_bucket, utc_now

LINE_DOWN = "line_down"
PUMP_OFFLINE = "pump_offline"
GAUGE_OFFLINE = "gauge_offline"
DEVICE_ALARMS = (LINE_DOWN, PUMP_OFFLINE, GAUGE_OFFLINE)

SAMPLE_S = 5.0  # error counters are read this often (in memory)
FLUSH_S = 60.0  # and what they gathered written this often
KEEP_EVENTS = 200  # newest history events kept per device
KEEP_COUNTS = timedelta(hours=48)
RECENT_ERRORS = 20  # last errors kept in memory per device, for status

# The counters of a line or gauge that are errors, by the name history shows.
_LINE_ERRORS = {
    "timeouts": "timeouts",
    "bad_crc": "bad_crc",
    "malformed": "malformed",
    "naks": "naks",
    "unexpected": "unexpected",
    "garbage_bytes": "garbage_bytes",
    "reopens": "reopens",
}
_BUS_ERRORS = {
    "timeouts": "timeouts",
    "exceptions": "exceptions",
    "malformed": "malformed",
    "reconnects": "reopens",
}


@dataclass
class Device:
    """One pump, line or gauge as the monitor knows it."""

    key: str  # "pump:3", "line:l0", "gauge:tls" (`edgectl history` takes these)
    kind: str  # pump | line | gauge
    label: str  # "pump 3", "line l0", "gauge tls"
    where: str  # its port, or its line and address
    alarm_kind: str
    line: str | None = None  # a pump's line key
    pump: int | None = None
    online: bool | None = None  # None: not known yet
    fault: DeviceFault | None = None
    own_fault: bool = False  # a pump that went offline while its line was up
    since: datetime | None = None
    last_seen: datetime | None = None
    alarmed: str | None = None  # the fault code of its open alarm
    dirty: bool = True
    counters: dict[str, int] = field(default_factory=dict)  # last sample, cumulative
    errors: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # since the flush
    recent: deque[tuple[datetime, str, int]] = field(
        default_factory=lambda: deque(maxlen=RECENT_ERRORS)
    )
    events: list[dict[str, Any]] = field(default_factory=list)  # not written yet
    offline_since: datetime | None = None
    online_since: datetime | None = None


class DeviceMonitor:
    """Follows every configured device; run `run()` as one of the daemon's tasks."""

    def __init__(
        self,
        config: Config,
        station: Station,
        lines: Mapping[str, object],
        gauges: Mapping[str, TankGauge],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.station = station
        self.lines = lines
        self.gauges = gauges
        self._now = now
        self._monotonic = monotonic
        self.log = get_logger(station=config.station.id, part="devices")
        self.devices: dict[str, Device] = {}
        for line in config.lines:
            self.devices[line_key(line.name)] = Device(
                line_key(line.name), "line", f"line {line.name}", line.where, LINE_DOWN
            )
            for pump in config.pumps_on(line.name):
                self.devices[pump_key(pump.number)] = Device(
                    pump_key(pump.number),
                    "pump",
                    f"pump {pump.number}",
                    f"{line.name}/{config.address_of(pump.number)}",
                    PUMP_OFFLINE,
                    line=line_key(line.name),
                    pump=pump.number,
                )
        for gauge in config.gauges:
            if gauge.name not in gauges:
                continue  # a protocol the station does not read yet
            where = gauge.port if gauge.port is not None else f"{gauge.host}:{gauge.tcp_port}"
            self.devices[gauge_key(gauge.name)] = Device(
                gauge_key(gauge.name), "gauge", f"gauge {gauge.name}", where, GAUGE_OFFLINE
            )
        self._by_address = {
            (pump.line, pump.address): pump_key(pump.number) for pump in config.pumps
        }
        self._queue: asyncio.Queue[LinkHealth | GaugeEvent] = asyncio.Queue()
        self._transitions = asyncio.Event()
        self._store_failing = False
        for driver in lines.values():
            if hasattr(driver, "on_health"):
                driver.on_health = self._queue.put_nowait
        self._flushed_at = monotonic()

    # ------------------------------------------------------------------ inputs
    def on_gauge_event(self, event: GaugeEvent) -> None:
        """Every event of a gauge: its online / offline changes and a sign of life."""
        device = self.devices.get(gauge_key(event.gauge))
        if device is None:
            return
        if isinstance(event, GaugeOffline | GaugeOnline):
            self._queue.put_nowait(event)
        else:
            device.last_seen = self._now()
            device.dirty = True

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        await self._load_alarms()
        try:
            while True:
                try:
                    async with asyncio.timeout(SAMPLE_S):
                        event = await self._queue.get()
                except TimeoutError:
                    event = None
                if event is not None:
                    await self._apply(event)
                    while not self._queue.empty():
                        await self._apply(self._queue.get_nowait())
                self._sample()
                for device in self.devices.values():
                    await self._sync_alarm(device)
                due = self._monotonic() - self._flushed_at >= FLUSH_S
                if due or any(d.events for d in self.devices.values()):
                    await self.flush()
        except asyncio.CancelledError:
            # The daemon stops: what was gathered since the last flush goes in now.
            self._sample()
            await self.flush()
            raise

    async def _load_alarms(self) -> None:
        """The device alarms still open from before a restart: cleared when the device
        answers, kept (not raised again) while it has the same fault."""
        try:
            alarms = await self.station.db_quiet(self.station.store.alarms, active_only=True)
        except StoreError:
            return
        for alarm in alarms:
            if alarm.get("kind") not in DEVICE_ALARMS:
                continue
            try:
                detail = json.loads(alarm.get("detail") or "{}")
            except ValueError:
                continue
            device = self.devices.get(str(detail.get("device")))
            if device is not None and device.alarm_kind == alarm["kind"]:
                device.alarmed = str(detail.get("code") or "")

    async def _apply(self, event: LinkHealth | GaugeEvent) -> None:
        if isinstance(event, LinkHealth):
            if event.address is None:
                device = self.devices.get(line_key(event.line))
            else:
                device = self.devices.get(self._by_address.get((event.line, event.address), ""))
            if device is None:
                return
            if device.kind == "pump" and event.fault is not None:
                line = self.devices.get(device.line or "")
                device.own_fault = line is None or line.online is not False
            self._change(device, event.fault)
        elif isinstance(event, GaugeOffline):
            device = self.devices[gauge_key(event.gauge)]
            self._change(device, DeviceFault(event.code, event.reason))
        elif isinstance(event, GaugeOnline):
            device = self.devices[gauge_key(event.gauge)]
            device.last_seen = self._now()
            self._change(device, None)

    def _change(self, device: Device, fault: DeviceFault | None) -> None:
        """A device's new state: logged and put into its history once per change."""
        now = self._now()
        if fault is None:
            device.last_seen = now
            if device.online is True:
                return
            was = device.fault
            down_s = (
                round((now - device.since).total_seconds(), 1)
                if device.since is not None and device.online is False
                else None
            )
            device.online, device.fault, device.since = True, None, now
            device.online_since = now
            device.own_fault = False
            if was is not None:
                self.log.info("device_online", device=device.key, where=device.where, down_s=down_s)
            device.events.append(_event(device, now, "online", None, "answers again"))
        else:
            if device.online is False and device.fault == fault:
                return
            device.online, device.fault, device.since = False, fault, now
            device.offline_since = now
            self.log.warning(
                "device_offline",
                device=device.key,
                where=device.where,
                reason=fault.reason,
                code=fault.code,
            )
            device.events.append(_event(device, now, "offline", fault.code, fault.reason))
            self._count(device, now, {"offline": 1})
        device.dirty = True

    def _wanted_alarm(self, device: Device) -> DeviceFault | None:
        if device.online is not False or device.fault is None:
            return None
        if device.kind == "pump" and not device.own_fault:
            return None  # its line is down: the line's alarm names the cause
        return device.fault

    async def _sync_alarm(self, device: Device) -> None:
        """Raise or clear the device's alarm to match its state; a store that cannot
        write now is tried again at the next round."""
        wanted = self._wanted_alarm(device)
        code = None if wanted is None else wanted.code
        if device.alarmed == code:
            return
        store = self.station.store
        try:
            if device.alarmed is not None:
                await self.station.db(store.clear_device_alarm, device.alarm_kind, device.key)
                device.alarmed = None
            if wanted is not None:
                await self.station.db(
                    store.raise_device_alarm,
                    device.alarm_kind,
                    device.key,
                    f"{device.label} ({device.where}): {wanted.reason}",
                    severity="critical" if device.kind == "line" else "warning",
                    pump=device.pump,
                    detail={"code": wanted.code, "reason": wanted.reason, "where": device.where},
                )
                device.alarmed = wanted.code
        except StoreError as exc:
            self._store_failed(exc)

    # ------------------------------------------------------------------ counters
    def _sample(self) -> None:
        """Read every device's error counters; what grew is counted, in memory."""
        now = self._now()
        wall, mono = now.timestamp(), self._monotonic()
        for device in self.devices.values():
            current = self._counters_of(device)
            if current is None:
                continue
            grown = {
                kind: n - device.counters.get(kind, 0)
                for kind, n in current.items()
                if n > device.counters.get(kind, 0)
            }
            device.counters = current
            if grown:
                self._count(device, now, grown)
            seen = self._last_seen_mono(device)
            if seen is not None:
                moment = datetime.fromtimestamp(wall - (mono - seen), UTC)
                if device.last_seen is None or moment > device.last_seen:
                    device.last_seen = moment
                    device.dirty = True

    def _count(self, device: Device, now: datetime, grown: Mapping[str, int]) -> None:
        for kind, n in grown.items():
            _, before = device.errors.get(kind, (now, 0))
            device.errors[kind] = (now, before + n)
            if kind != "offline":
                device.recent.appendleft((now, kind, n))
        device.dirty = True

    def _counters_of(self, device: Device) -> dict[str, int] | None:
        if device.kind == "pump":
            line = self.lines.get(_name(device.line or ""))
            errors = getattr(line, "pump_errors", None)
            if errors is None:
                return None
            address = self.config.pump(device.pump or 0).address
            return dict(errors(address))
        if device.kind == "line":
            counters = getattr(self.lines.get(_name(device.key)), "counters", None)
        else:
            counters = getattr(self.gauges.get(_name(device.key)), "counters", None)
        if counters is None:
            return None
        names = _LINE_ERRORS if isinstance(counters, LineCounters) else _BUS_ERRORS
        values = counters.as_dict()
        return {label: int(values[name]) for name, label in names.items() if name in values}

    def _last_seen_mono(self, device: Device) -> float | None:
        if device.kind == "pump":
            line = self.lines.get(_name(device.line or ""))
            seen = getattr(line, "last_seen", None)
            if seen is None:
                return None
            value = seen(self.config.pump(device.pump or 0).address)
            return None if value is None else float(value)
        if device.kind == "line":
            line = self.lines.get(_name(device.key))
            seen = getattr(line, "last_seen", None)
            if seen is None:
                return None
            moments = [seen(p.address) for p in self.config.pumps_on(_name(device.key))]
            known = [float(m) for m in moments if m is not None]
            return max(known) if known else None
        return None

    # ------------------------------------------------------------------ the store
    async def flush(self) -> None:
        """Write what was gathered since the last flush in one commit."""
        self._flushed_at = self._monotonic()
        dirty = [d for d in self.devices.values() if d.dirty]
        if not dirty:
            return
        states, events, counts = [], [], []
        for device in dirty:
            states.append(_state_row(device))
            events += device.events
            for kind, (at, n) in sorted(device.errors.items()):
                if kind != "offline":
                    events.append(
                        {
                            "device": device.key,
                            "at": _iso(at),
                            "event": "errors",
                            "kind": kind,
                            "count": n,
                            "message": None,
                        }
                    )
                counts.append((device.key, device_bucket(at), kind, n))
        try:
            await self.station.db_quiet(
                self.station.store.record_device_activity,
                states,
                events,
                counts,
                keep_events=KEEP_EVENTS,
                counts_since=device_bucket(self._now() - KEEP_COUNTS),
            )
        except StoreError as exc:
            self._store_failed(exc)
            return  # kept for the next flush
        if self._store_failing:
            self._store_failing = False
            self.log.info("device_history_recorded_again")
        for device in dirty:
            device.dirty = False
            device.events = []
            device.errors = {}

    def _store_failed(self, exc: StoreError) -> None:
        if not self._store_failing:
            self._store_failing = True
            self.log.warning("device_history_not_recorded", error=str(exc), code=exc.code)

    # ------------------------------------------------------------------ views
    def view(self, key: str) -> dict[str, Any]:
        """One device for `edgectl status`: online, and why not (a pump on a line that is
        down: the line's reason)."""
        device = self.devices[key]
        reason: str | None = None
        code: str | None = None
        online = device.online
        line = self.devices.get(device.line or "")
        if line is not None and line.online is False and line.fault is not None:
            online = False
            reason, code = f"line {_name(line.key)} is down: {line.fault.reason}", line.fault.code
        elif device.online is False and device.fault is not None:
            reason, code = device.fault.reason, device.fault.code
        return {
            "device": key,
            "online": online,
            "reason": reason,
            "code": code,
            "since": None if device.since is None else _iso(device.since),
            "last_seen_at": None if device.last_seen is None else _iso(device.last_seen),
            "alarm": device.alarm_kind if device.alarmed is not None else None,
            "recent_errors": [
                {"at": _iso(at), "kind": kind, "count": n} for at, kind, n in device.recent
            ],
        }

    def views(self) -> dict[str, dict[str, Any]]:
        return {key: self.view(key) for key in self.devices}


def line_key(name: str) -> str:
    return f"line:{name}"


def pump_key(number: int) -> str:
    return f"pump:{number}"


def gauge_key(name: str) -> str:
    return f"gauge:{name}"


def _name(key: str) -> str:
    return key.partition(":")[2]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(
    device: Device, at: datetime, event: str, kind: str | None, message: str | None
) -> dict[str, Any]:
    return {
        "device": device.key,
        "at": _iso(at),
        "event": event,
        "kind": kind,
        "count": 1,
        "message": message,
    }


def _state_row(device: Device) -> dict[str, Any]:
    return {
        "device": device.key,
        "kind": device.kind,
        "online": None if device.online is None else int(device.online),
        "fault": None if device.fault is None else device.fault.code,
        "reason": None if device.fault is None else device.fault.reason,
        "last_seen_at": None if device.last_seen is None else _iso(device.last_seen),
        "offline_since": None if device.offline_since is None else _iso(device.offline_since),
        "online_since": None if device.online_since is None else _iso(device.online_since),
        "updated_at": utc_now(),
    }
