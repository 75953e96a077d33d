"""The daemon's local control socket: status and records for the CLI, manual actions, live streams.

A Unix socket only (mode 0660, owner and the configured group), JSON lines (see protocol.py).
Every read is answered from memory or through the station's store thread, so the event loop
never waits on disk; a client that misbehaves (garbage, a huge line, a stalled reader, a
vanished peer) loses its own connection and nothing else. A socket that cannot be served is
logged and the forecourt keeps selling without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import pwd
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import edgectl
from drivers import registry
from drivers.base import BusCounters, LineCounters, TankGauge
from edgectl import health, shifts
from edgectl.config import Config, ControlConfig
from edgectl.control import protocol
from edgectl.control.protocol import Args, ProtocolError, Request
from edgectl.control.shapes import open_tank_alarms, tank_rows
from edgectl.control.sniffing import iso_ts
from edgectl.devices import gauge_key, line_key, pump_key
from edgectl.errors import CommandError, EdgectlError
from edgectl.forecourt.sale import AuthorizationSource
from edgectl.logs import get_logger
from edgectl.station import PumpView, Station

if TYPE_CHECKING:
    from drivers.base import DispenserLine
    from edgectl.cloud.publisher import OutboxPublisher
    from edgectl.cloud.session import CloudSession
    from edgectl.config import Config
    from edgectl.devices import DeviceMonitor
    from edgectl.metrics import StationMetrics
    from edgectl.tank_service import TankService

T = TypeVar("T")

MAX_CLIENTS: Final = 16
IDLE_TIMEOUT_S: Final = 300.0  # a connection that asks nothing for this long is closed
WRITE_TIMEOUT_S: Final = 10.0  # a client that stops reading for this long is dropped
ACTION_TIMEOUT_S: Final = 20.0  # an action waits on a pump line, with its retries
READ_TIMEOUT_S: Final = 5.0
RATE_SAMPLE_S: Final = 5.0
RATE_WINDOW_S: Final = 60.0
SNIFF_QUEUE: Final = 2000  # frames held for a slow sniffing client before some are dropped
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100_000
SOCKET_MODE: Final = 0o660

Handler = Callable[[Args, "Peer"], Awaitable[Any]]
Stream = Callable[[Args, "Peer"], AsyncGenerator[Any, None]]


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, as the kernel says (SO_PEERCRED)."""

    pid: int | None
    uid: int | None
    gid: int | None
    user: str | None


class LineRates:
    """Counter samples of each line over the last minute, so status can show rates per minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, dict[str, int]]]] = {}

    def sample(self, name: str, counters: dict[str, int]) -> None:
        now = self._clock()
        samples = self._samples.setdefault(name, deque())
        samples.append((now, counters))
        while len(samples) > 1 and samples[1][0] <= now - RATE_WINDOW_S:
            samples.popleft()

    def per_minute(self, name: str, counters: dict[str, int]) -> dict[str, float] | None:
        """Counter increase per minute over the last minute (or since the first sample)."""
        samples = self._samples.get(name)
        now = self._clock()
        if not samples or now - samples[0][0] < 1.0:
            return None
        since, then = samples[0]
        scale = 60.0 / (now - since)
        return {
            key: round((value - then.get(key, 0)) * scale, 1) for key, value in counters.items()
        }


class CloudView(Protocol):
    """The cloud link as the server reports it."""

    @property
    def session(self) -> CloudSession: ...

    @property
    def publisher(self) -> OutboxPublisher: ...


class Served(Protocol):
    """What the control server serves: the parts of a running station it reads and asks.
    The daemon fits it; the server neither wires nor stops anything, and knows no Daemon."""

    @property
    def config(self) -> Config: ...

    @property
    def station(self) -> Station: ...

    @property
    def lines(self) -> Mapping[str, DispenserLine]: ...

    @property
    def devices(self) -> DeviceMonitor: ...

    @property
    def tanks(self) -> TankService | None: ...

    @property
    def metrics(self) -> StationMetrics: ...

    @property
    def cloud(self) -> CloudView | None: ...

    @property
    def uptime_s(self) -> float: ...


class ControlServer:
    """Serves the control socket for one station; run `run()` as one of the daemon's tasks."""

    def __init__(self, served: Served, control: ControlConfig) -> None:
        self.served = served
        self.station: Station = served.station
        self.path = control.socket
        self.group = control.group
        self.log = get_logger(station=served.config.station.id, part="control")
        self.rates = LineRates()
        self._connections: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._inode: int | None = None
        self._handlers: dict[str, Handler] = {
            "status": self._status,
            "pumps": self._pumps,
            "tanks": self._tanks,
            "prices": self._prices,
            "alarms": self._alarms,
            "health": self._health,
            "history": self._history,
            "metrics": self._metrics,
            "sales": self._sales,
            "orders": self._orders,
            "outbox": self._outbox,
            "audit": self._audit,
            "authorize": self._authorize,
            "stop": self._stop,
            "price": self._price,
            "deliveries": self._deliveries,
            "reconciliations": self._reconciliations,
            "totals": self._totals,
            "shifts": self._shifts,
            "shift_open": self._shift_open,
            "shift_close": self._shift_close,
            "close": self._close,
            "open": self._open,
        }
        self._streams: dict[str, Stream] = {"watch": self._watch, "sniff": self._sniff}

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        """Serve until cancelled. Never raises: the forecourt sells on without its socket."""
        try:
            await self._serve()
        except Exception:
            self.log.exception(
                "control_server_failed",
                socket=str(self.path),
                hint="the station runs on; the CLI cannot reach it until the daemon restarts",
            )

    async def _serve(self) -> None:
        sock: socket.socket | None = None
        try:
            sock = self._bind()
            server = await asyncio.start_unix_server(
                self._connection, sock=sock, limit=protocol.MAX_LINE
            )
        except OSError as exc:
            if sock is not None:
                sock.close()
            self.log.error(
                "control_socket_unavailable",
                socket=str(self.path),
                error=exc.strerror or str(exc),
                hint="the station runs on; the CLI cannot reach it until this is fixed",
            )
            self._unlink()
            return
        self.log.info("control_socket_listening", socket=str(self.path))
        try:
            while True:
                for name, line in self.served.lines.items():
                    counters = _counters(line)
                    if counters is not None:
                        self.rates.sample(name, counters.as_dict())
                for name, gauge in self._gauges().items():
                    totals = _gauge_counters(gauge)
                    if totals is not None:
                        self.rates.sample(_gauge_key(name), totals)
                await asyncio.sleep(RATE_SAMPLE_S)
        finally:
            server.close()
            self._closing = True
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.wait(list(self._connections), timeout=1.0)
            self._unlink()
            self.log.info("control_socket_closed")

    def _bind(self) -> socket.socket:
        """A listening socket at `path`, with its permissions set before it is reachable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _answers(self.path):
            raise OSError(errno.EADDRINUSE, f"another edgectl daemon serves {self.path}")
        # Bind beside the final name, set mode and group, then rename into place: nobody can
        # connect through looser permissions in between, and a stale socket is replaced.
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(temp))
            os.chmod(temp, SOCKET_MODE)
            if self.group is not None:
                self._chgrp(temp)
            os.replace(temp, self.path)
            sock.listen(MAX_CLIENTS)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        self._inode = os.stat(self.path).st_ino
        return sock

    def _chgrp(self, path: Path) -> None:
        assert self.group is not None
        try:
            gid = grp.getgrnam(self.group).gr_gid
            os.chown(path, -1, gid)
        except KeyError:
            self.log.warning("control_group_unknown", group=self.group)
        except PermissionError:
            self.log.warning(
                "control_group_not_set",
                group=self.group,
                hint="the daemon's user must be a member of the group",
            )

    def _unlink(self) -> None:
        # Only our own socket: another daemon may have taken the path over since.
        try:
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass
        self._inode = None

    # ------------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CLIENTS:
                await _send(writer, protocol.error(None, protocol.BUSY, "too many CLI clients"))
                return
            peer = await self._peer(writer)
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        line = await reader.readline()
                except TimeoutError:
                    return
                except ValueError:  # asyncio's word for a line longer than the limit
                    message = f"request longer than {protocol.MAX_LINE} bytes"
                    await _send(writer, protocol.error(None, protocol.BAD_REQUEST, message))
                    return
                if not line:
                    return
                if line.strip():
                    await self._request(line, peer, reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading: its loss only
        except asyncio.CancelledError:
            # Our own close ends attached clients (watch, sniff). A connection task that
            # ends cancelled makes asyncio's stream callback log a traceback (CPython 3.11),
            # so it ends normally instead; any other cancellation goes on up.
            if not self._closing:
                raise
        except Exception:
            self.log.exception("control_connection_failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _peer(self, writer: asyncio.StreamWriter) -> Peer:
        sock = writer.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, gid = struct.unpack("3i", raw)
        except (OSError, AttributeError):
            return Peer(None, None, None, None)
        # The user database may be remote (NSS): look it up off the loop.
        name = await asyncio.get_running_loop().run_in_executor(None, _user_name, uid)
        return Peer(pid, uid, gid, name)

    async def _request(
        self,
        line: bytes,
        peer: Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            request = protocol.parse_request(line)
        except ProtocolError as exc:
            await _send(writer, protocol.error(exc.request_id, exc.code, str(exc)))
            return
        stream = self._streams.get(request.op)
        if stream is not None:
            await self._stream(request, stream(Args(request.args), peer), reader, writer)
            return
        handler = self._handlers[request.op]
        timeout = ACTION_TIMEOUT_S if request.op in protocol.ACTION_OPS else READ_TIMEOUT_S
        try:
            async with asyncio.timeout(timeout):
                result = await handler(Args(request.args), peer)
            reply = protocol.ok(request.id, result)
        except TimeoutError:
            message = f"{request.op} got no answer within {timeout:g} s"
            reply = protocol.error(request.id, protocol.TIMEOUT, message)
        except ProtocolError as exc:
            reply = protocol.error(request.id, exc.code, str(exc))
        except EdgectlError as exc:
            reply = protocol.error(request.id, exc.code or "failed", str(exc))
        except Exception:
            self.log.exception("control_request_failed", op=request.op)
            message = "internal error in the daemon (details in its log)"
            reply = protocol.error(request.id, protocol.INTERNAL, message)
        await _send(writer, reply)

    async def _stream(
        self,
        request: Request,
        events: AsyncGenerator[Any, None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Send the stream's first item as the answer, then events until the client leaves."""
        try:
            try:
                first = await anext(events)
            except (ProtocolError, EdgectlError) as exc:
                await _send(writer, protocol.error(request.id, exc.code, str(exc)))
                return

            async def forward() -> None:
                async for item in events:
                    await _send(writer, protocol.event(request.id, item))

            await _send(writer, protocol.ok(request.id, first))
            sender = asyncio.create_task(forward(), name=f"control-{request.op}")
            # Anything the client sends, or its hang-up, ends the stream.
            hangup = asyncio.create_task(reader.read(protocol.MAX_LINE))
            try:
                await asyncio.wait({sender, hangup}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # The daemon is stopping: say so, without waiting for a slow client.
                with contextlib.suppress(Exception):
                    writer.write(protocol.end(request.id, "the daemon is stopping"))
                raise
            finally:
                sender.cancel()
                hangup.cancel()
                await asyncio.gather(sender, hangup, return_exceptions=True)
            failure = None if sender.cancelled() else sender.exception()
            if failure is not None and not isinstance(failure, ConnectionError | TimeoutError):
                self.log.error("control_stream_failed", op=request.op, error=repr(failure))
        finally:
            await events.aclose()

    # ------------------------------------------------------------------ reads
    async def _status(self, args: Args, peer: Peer) -> dict[str, Any]:
        station = self.station
        outbox = await station.db(station.store.reader.outbox_summary)
        tanks = await self._tank_rows()
        lines = [self._line_status(name, line) for name, line in self.served.lines.items()]
        lines += [self._gauge_status(name, gauge, tanks) for name, gauge in self._gauges().items()]
        devices = self.served.devices.views()
        for line in lines:
            key = (
                line_key(line["line"]) if line["kind"] == "dispensers" else gauge_key(line["line"])
            )
            view = devices.get(key, {})
            line["up"] = view.get("online")
            line["reason"] = view.get("reason")
            line["last_seen_at"] = view.get("last_seen_at")
        pumps = []
        for pump in station.snapshot():
            view = devices.get(pump_key(pump.number), {})
            pumps.append(
                {
                    "pump": pump.number,
                    "line": pump.line,
                    "address": self.served.config.address_of(pump.number),
                    "host": self.served.config.pump(pump.number).host,
                    "online": pump.online,
                    "state": pump.state.name,
                    "reason": None if pump.online else view.get("reason"),
                    "last_seen_at": view.get("last_seen_at"),
                }
            )
        return {
            "daemon": {
                "version": edgectl.__version__,
                "pid": os.getpid(),
                "uptime_s": round(self.served.uptime_s, 1),
                "started_at": iso_ts(time.time() - self.served.uptime_s),
                "station": self.served.config.station.id,
                "station_name": self.served.config.station.name,
                "mode": self.served.config.authorization.mode,
                "config": str(self.served.config.source),
                "store": str(self.served.config.store.path),
                "socket": str(self.path),
            },
            "cloud": self._cloud_status(outbox),
            "outbox": {**outbox, "oldest_age_s": _age_s(outbox["oldest_at"])},
            "lines": lines,
            "pumps": pumps,
            "tanks": tanks,
            "health": (await self._verdict()).as_dict(),
        }

    async def _verdict(self) -> health.Verdict:
        """The health rules over the daemon's own view (edgectl/health.py)."""
        station, daemon = self.station, self.served
        now = datetime.now(UTC)
        from_store = await station.db_quiet(health.gather_store, station.store.reader, now)
        from_files = await asyncio.to_thread(health.gather_files, daemon.config, now)
        views = daemon.devices.views()
        lines = [v for k, v in views.items() if k.startswith("line:")]
        gauges = [v for k, v in views.items() if k.startswith("gauge:")]
        pumps = station.snapshot()
        cloud = daemon.cloud
        outage = None if cloud is None else cloud.session.outage_since
        fault = station.store.write_fault
        snapshot = health.HealthSnapshot(
            now=now,
            daemon_up=True,
            uptime_s=daemon.uptime_s,
            store_error=None if fault is None else str(fault.error),
            pumps=health.Devices(len(pumps), sum(1 for p in pumps if p.online)),
            lines=health.Devices(len(lines), sum(1 for v in lines if v["online"])),
            gauges=health.Devices(len(gauges), sum(1 for v in gauges if v["online"])),
            cloud_configured=cloud is not None,
            cloud_connected=None if cloud is None else cloud.session.connected,
            cloud_outage_s=None if outage is None else (now - outage).total_seconds(),
            **from_store,
            **from_files,
        )
        return health.evaluate(snapshot)

    async def _health(self, args: Args, peer: Peer) -> dict[str, Any]:
        return (await self._verdict()).as_dict()

    async def _metrics(self, args: Args, peer: Peer) -> dict[str, Any]:
        """The Prometheus exposition the textfile holds (edgectl/metrics.py), or with `json`
        its metric families as objects."""
        metrics = self.served.metrics
        if args.flag("json"):
            await metrics.refresh()
            return {"families": metrics.families()}
        return {"text": (await metrics.exposition()).decode()}

    async def _history(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        await self.served.devices.flush()  # what the monitor gathered since its last flush
        return await self.station.db_quiet(
            reader.device_history,
            now=datetime.now(UTC),
            device=args.opt_str("device"),
            last=args.opt_int("last", lo=1, hi=MAX_LIMIT) or 10,
        )

    def _cloud_status(self, outbox: Mapping[str, Any]) -> dict[str, Any] | None:
        cloud = self.served.cloud
        if cloud is None:
            return None
        session, publisher = cloud.session, cloud.publisher
        last = session.last_puback_at
        return {
            "broker": f"{session.cloud.host}:{session.cloud.port}",
            "connected": session.connected,
            "last_puback_at": last.isoformat() if last is not None else None,
            "last_puback_age_s": (
                round((datetime.now(UTC) - last).total_seconds(), 1) if last is not None else None
            ),
            "published": publisher.published,
            "reconnects": session.reconnects,
            "last_error": str(session.last_error) if session.last_error is not None else None,
            "outbox_depth": outbox["depth"],
            "outbox_oldest_age_s": _age_s(outbox["oldest_at"]),
        }

    def _line_status(self, name: str, line: object) -> dict[str, Any]:
        config = self.served.config.line(name)
        counters = _counters(line)
        totals = counters.as_dict() if counters is not None else {}
        per_minute = self.rates.per_minute(name, totals) if counters is not None else None
        pumps = self.served.config.pumps_on(name)
        online = sum(1 for p in pumps if self.station.points[p.number].online)
        status: dict[str, Any] = {
            "line": name,
            "kind": "dispensers",
            "port": config.where,
            "protocol": config.protocol,
            "settings": registry.lookup(config.protocol).line_settings(config),
            "pumps": len(pumps),
            "online": online,
            "counters": totals,
            "per_minute": None,
        }
        if per_minute is not None:
            status["per_minute"] = _line_rates(per_minute)
        return status

    def _gauge_status(
        self, name: str, gauge: TankGauge, tanks: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A tank gauge's line (serial or TCP), shaped as a pump line's status."""
        config = self.served.config.gauge(name)
        totals = _gauge_counters(gauge)
        per_minute = None if totals is None else self.rates.per_minute(_gauge_key(name), totals)
        if config.port is not None:
            port = config.port
            settings = f"{config.baud} {config.bytesize}{config.parity[0].upper()}{config.stopbits}"
        else:
            port, settings = f"{config.host}:{config.tcp_port}", "tcp"
        read = [tank for tank in tanks if tank["gauge"] == name]
        return {
            "line": name,
            "kind": "gauge",
            "port": port,
            "protocol": config.protocol,
            "settings": settings,
            "gauge_online": gauge.is_online,
            "tanks": len(read),
            "online": sum(1 for tank in read if tank["online"]),
            "counters": totals or {},
            "per_minute": None if per_minute is None else _line_rates(per_minute),
        }

    def _gauges(self) -> dict[str, TankGauge]:
        service = self.served.tanks
        return {} if service is None else service.gauges

    async def _tank_rows(self) -> list[dict[str, Any]]:
        """The tanks as the service sees them, with the alarms the store holds open for them
        (the gauge's own alarms live only there)."""
        service = self.served.tanks
        if service is None:
            return []  # a tank is read through a gauge: no gauges, no tanks
        views = service.snapshot()
        reader = self.station.store.reader
        alarms = await self.station.db(reader.alarms, active_only=True, limit=None)
        return tank_rows(self.served.config, views, stored_alarms=open_tank_alarms(alarms))

    async def _pumps(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        config = self.served.config
        return [pump_json(view, config) for view in self.station.snapshot()]

    async def _tanks(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        return await self._tank_rows()

    async def _prices(self, args: Args, peer: Peer) -> dict[str, Any]:
        station = self.station
        _active, pending = await station.db(station.store.price_sets)
        in_force = station.prices
        return {
            "price_set_id": in_force.price_set_id,
            "currency": station.config.station.currency,
            "grades": [
                {
                    "grade": grade.id,
                    "name": grade.name,
                    "unit_price": in_force.prices.get(grade.id, grade.unit_price),
                    "configured": grade.unit_price,
                }
                for grade in station.config.grades
            ],
            "pumps": [
                {"pump": number, "price_set_id": service.price_set_id}
                for number, service in station.points.items()
            ],
            "pending": [
                {"price_set_id": ps_id, "prices": prices, "effective_at": effective_at}
                for ps_id, prices, effective_at in pending
            ],
        }

    async def _alarms(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        return await self.station.db(
            reader.alarms, active_only=not args.flag("cleared"), limit=_limit(args)
        )

    async def _sales(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        return await self.station.db(
            reader.sales,
            since=args.opt_str("since"),
            pump=args.opt_int("pump", lo=1, hi=99),
            limit=_limit(args),
        )

    async def _orders(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        return await self.station.db(
            reader.orders,
            status=args.opt_str("status"),
            since=args.opt_str("since"),
            limit=_limit(args),
        )

    async def _outbox(self, args: Args, peer: Peer) -> dict[str, Any]:
        reader = self.station.store.reader
        summary = await self.station.db(reader.outbox_summary)
        rows = await self.station.db(reader.outbox, limit=_limit(args))
        return {**summary, "oldest_age_s": _age_s(summary["oldest_at"]), "rows": rows}

    async def _audit(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        return await self.station.db(reader.audit, limit=_limit(args))

    async def _deliveries(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        return await self.station.db_quiet(
            reader.deliveries,
            since=args.opt_str("since"),
            tank=args.opt_int("tank", lo=1, hi=99),
            limit=_limit(args),
        )

    async def _reconciliations(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        reader = self.station.store.reader
        return await self.station.db_quiet(
            reader.reconciliations,
            tank=args.opt_int("tank", lo=1, hi=99),
            since_day=args.opt_str("since_day"),
        )

    async def _totals(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        return await self.station.db_quiet(self.station.store.reader.nozzle_totals)

    async def _shifts(self, args: Args, peer: Peer) -> list[dict[str, Any]]:
        return await self.station.db_quiet(self.station.store.reader.shifts, limit=_limit(args))

    # ------------------------------------------------------------------ actions
    async def _audited(
        self, action: str, args: Args, peer: Peer, act: Callable[[], Awaitable[T]]
    ) -> T:
        """Record who asked for what before acting, then how it went."""
        store = self.station.store
        client_user = args.opt_str("user")
        recorded = {k: v for k, v in args.raw.items() if k != "user"}
        audit_id = await self.station.db(
            store.audit_requested,
            action,
            recorded,
            client_user=client_user,
            peer_uid=peer.uid,
            peer_user=peer.user,
            peer_pid=peer.pid,
        )
        log = self.log.bind(
            action=action, audit_id=audit_id, user=client_user, uid=peer.uid, peer_user=peer.user
        )
        log.info("manual_action_requested", args=recorded)
        try:
            result = await act()
        except BaseException as exc:
            outcome = "failed" if isinstance(exc, Exception) else "interrupted"
            message = str(exc) or type(exc).__name__
            await self.station.db(store.audit_finished, audit_id, outcome, message)
            log.warning("manual_action_failed", error=message)
            raise
        # An action over several pumps says itself how it went ("partial": some could not).
        outcome = result.get("outcome", "ok") if isinstance(result, Mapping) else "ok"
        await self.station.db(store.audit_finished, audit_id, outcome, _summary(result))
        log.info("manual_action_done", outcome=outcome)
        return result

    def _who(self, args: Args, peer: Peer) -> str:
        name = args.opt_str("user") or peer.user or (f"uid {peer.uid}" if peer.uid else "?")
        return f"cli:{name}"

    async def _authorize(self, args: Args, peer: Peer) -> dict[str, Any]:
        pump = args.req_int("pump", lo=1, hi=99)
        amount = args.opt_decimal("amount")
        volume = args.opt_decimal("volume")
        nozzles = args.int_list("nozzles")
        if amount is not None and volume is not None:
            raise ProtocolError("give amount or volume, not both", code=protocol.INVALID_ARGS)
        limits = self.station.config.limits
        if amount is None and volume is None:
            amount = limits.max_preset_amount  # never an unlimited release from the CLI

        async def act() -> dict[str, Any]:
            self._known_pump(pump)
            auth = await self.station.authorize(
                pump,
                AuthorizationSource.ATTENDANT,
                nozzles=nozzles,
                preset_amount=amount,
                preset_volume=volume,
                requested_by=self._who(args, peer),
            )
            return {
                "message": f"pump {pump} authorized",
                "pump": pump,
                "authorization_id": auth.id,
                "state": auth.state.value,
                "preset_amount": auth.preset_amount,
                "preset_volume": auth.preset_volume,
                "nozzles": list(auth.nozzles),
                "currency": self.station.config.station.currency,
            }

        return await self._audited("authorize", args, peer, act)

    def _known_pump(self, pump: int) -> None:
        """Refuse a pump the station does not have, naming the ones it has."""
        if pump not in self.station.points:
            known = ", ".join(str(n) for n in sorted(self.station.points)) or "none"
            raise CommandError(f"unknown pump {pump} (pumps: {known})", code="unknown_pump")

    async def _stop(self, args: Args, peer: Peer) -> dict[str, Any]:
        if args.flag("all"):
            return await self._audited("stop", args, peer, self._stop_all)
        pump = args.req_int("pump", lo=1, hi=99)

        async def act() -> dict[str, Any]:
            self._known_pump(pump)
            message = await self.station.stop_pump(pump)
            return {"message": message, "pump": pump}

        return await self._audited("stop", args, peer, act)

    async def _stop_all(self) -> dict[str, Any]:
        """STOP to every pump at once (each line carries its own in turn): which stopped,
        and why each other one could not."""
        numbers = sorted(self.station.points)
        results = await asyncio.gather(
            *(self.station.stop_pump(n) for n in numbers), return_exceptions=True
        )
        stopped: list[int] = []
        failed: list[dict[str, Any]] = []
        for number, result in zip(numbers, results, strict=True):
            if isinstance(result, EdgectlError):
                failed.append({"pump": number, "code": result.code, "reason": str(result)})
            elif isinstance(result, BaseException):
                raise result
            else:
                stopped.append(number)
        message = "stopped pump(s) " + ", ".join(map(str, stopped)) if stopped else "none stopped"
        if failed:
            message += "; not stopped: " + "; ".join(str(f["reason"]) for f in failed)
        return {
            "message": message,
            "stopped": stopped,
            "failed": failed,
            "outcome": "ok" if not failed else "partial" if stopped else "failed",
        }

    async def _price(self, args: Args, peer: Peer) -> dict[str, Any]:
        grade_id = args.req_str("grade")
        price = args.opt_decimal("price")
        if price is None:
            raise ProtocolError("price: missing", code=protocol.INVALID_ARGS)
        grades = {g.id: g for g in self.station.config.grades}
        grade = grades.get(grade_id)
        if grade is None:
            known = ", ".join(grades)
            raise CommandError(f"unknown grade {grade_id!r} (known: {known})", code="unknown_grade")
        if price <= 0:
            raise CommandError(f"price {price} must be more than 0", code="invalid_price")
        exponent = price.normalize().as_tuple().exponent
        places = max(0, -exponent) if isinstance(exponent, int) else 0
        if places > grade.price_decimals:
            raise CommandError(
                f"price {price} has more decimals than grade {grade_id}'s {grade.price_decimals}",
                code="invalid_price",
            )
        price = price.quantize(Decimal(1).scaleb(-grade.price_decimals))
        price_set_id = "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        force = args.flag("force")

        async def act() -> dict[str, Any]:
            old = self.station.prices.prices.get(grade_id, grade.unit_price)
            change = _price_change(old, price)
            limit = self.station.config.limits.max_price_change_pct
            currency = self.station.config.station.currency
            if abs(change) > limit and not force:
                raise CommandError(
                    f"grade {grade_id}: {old} → {price} {currency} is a change of "
                    f"{change:+.1f} %, more than the {limit} % allowed "
                    "([limits] max_price_change_pct); check the price, or give --force",
                    code="price_change_too_large",
                )
            await self.station.set_prices(price_set_id, {grade_id: price})
            return {
                "message": f"grade {grade_id}: {old} → {price} {currency} ({change:+.1f} %),"
                " each pump takes it when idle",
                "grade": grade_id,
                "previous_price": old,
                "unit_price": price,
                "change_pct": change.quantize(Decimal("0.1")),
                "price_set_id": price_set_id,
            }

        return await self._audited("price", args, peer, act)

    async def _shift_open(self, args: Args, peer: Peer) -> dict[str, Any]:
        return await self._shift("open", args, peer)

    async def _shift_close(self, args: Args, peer: Peer) -> dict[str, Any]:
        return await self._shift("close", args, peer)

    async def _shift(self, moment: str, args: Args, peer: Peer) -> dict[str, Any]:
        """Open or close a shift with each nozzle's totals now (edgectl/shifts.py)."""
        store = self.station.store
        who = args.opt_str("user") or peer.user

        async def act() -> dict[str, Any]:
            totals = await shifts.totals_now(self.station)
            record = store.open_shift if moment == "open" else store.close_shift
            shift = await self.station.db(record, who, totals)
            return shifts.result(moment, shift, totals, "daemon")

        return await self._audited(f"shift_{moment}", args, peer, act)

    async def _close(self, args: Args, peer: Peer) -> dict[str, Any]:
        """Close a pump: no source authorizes it until it is opened (durable, audited)."""
        pump = args.req_int("pump", lo=1, hi=99)
        reason = args.opt_str("reason")

        async def act() -> dict[str, Any]:
            message = await self.station.close_pump(pump, by=self._who(args, peer), reason=reason)
            return {"message": message, "pump": pump, "closed": True}

        return await self._audited("close", args, peer, act)

    async def _open(self, args: Args, peer: Peer) -> dict[str, Any]:
        """Open a closed pump again (audited)."""
        pump = args.req_int("pump", lo=1, hi=99)

        async def act() -> dict[str, Any]:
            message = await self.station.open_pump(pump, by=self._who(args, peer))
            return {"message": message, "pump": pump, "closed": False}

        return await self._audited("open", args, peer, act)

    # ------------------------------------------------------------------ streams
    async def _watch(self, args: Args, peer: Peer) -> AsyncGenerator[dict[str, Any], None]:
        interval = args.number("interval", 1.0, lo=0.1, hi=60.0)
        yield {"interval": interval, "station": self.served.config.station.id}
        while True:
            yield {
                "at": iso_ts(time.time()),
                "pumps": [pump_json(view, self.served.config) for view in self.station.snapshot()],
                "tanks": await self._tank_rows(),
            }
            await asyncio.sleep(interval)

    async def _sniff(self, args: Args, peer: Peer) -> AsyncGenerator[dict[str, Any], None]:
        name = args.req_str("line")
        line = self.served.lines.get(name)
        gauge = self._gauges().get(name) if line is None else None
        if line is None and gauge is None:
            known = ", ".join([*self.served.lines, *self._gauges()]) or "none"
            raise CommandError(f"no line named {name!r} (lines: {known})", code="unknown_line")
        driver: object
        if line is not None:
            config = self.served.config.line(name)
            header: dict[str, Any] = {
                "line": name,
                "port": config.where,
                "protocol": config.protocol,
            }
            driver = line
        else:
            header, driver = self._gauge_header(name, args), gauge
        # The protocol's entry says whether and how its frames are watched.
        entry = registry.lookup(header["protocol"])
        if not entry.has(registry.Capability.SNIFF):
            raise CommandError(f"line {name} cannot be sniffed yet", code="not_supported")
        if entry.sniff_addresses is None:
            if args.opt_int("address") is not None:
                message = f"{name} is a {entry.title}: its line has no addresses to filter"
                raise ProtocolError(message, code=protocol.INVALID_ARGS)
            address = None
        else:
            address = args.opt_int("address")
            there = self._sniff_addresses(name, line is not None)
            if address is not None and address not in there:
                shown = ", ".join(entry.show_address(a) for a in there) or "none"
                raise CommandError(
                    f"{name} has nothing at address {entry.show_address(address)} "
                    f"(its addresses: {shown})",
                    code="unknown_address",
                )
        # --no-polls is a pump line's: a gauge's traffic is all shown (the header says so).
        no_polls = args.flag("no_polls") and line is not None
        sniffer = entry.sniffer(driver, address, no_polls)
        frames = _tapped(sniffer.taps, header, sniffer.keep, sniffer.describe)
        async with contextlib.aclosing(frames):
            async for event in frames:
                yield event

    def _sniff_addresses(self, name: str, pump_line: bool) -> list[int]:
        """The addresses the station talks to on a line: its pumps', or its probes' ids."""
        config = self.served.config
        if pump_line:
            return sorted(p.address for p in config.pumps_on(name))
        return sorted({t.device_id or 1 for t in config.tanks_on(name)})

    def _gauge_header(self, name: str, args: Args) -> dict[str, Any]:
        config = self.served.config.gauge(name)
        port = config.port if config.port is not None else f"{config.host}:{config.tcp_port}"
        header: dict[str, Any] = {"line": name, "port": port, "protocol": config.protocol}
        if args.flag("no_polls"):
            header["note"] = "--no-polls applies to pump lines: a gauge's traffic is all shown"
        return header


async def _tapped(
    taps: list[Any],
    header: dict[str, Any],
    keep: Callable[[str, bytes, Any], bool],
    describe: Callable[[str, bytes, Any, float, float | None], dict[str, Any]],
) -> AsyncGenerator[dict[str, Any], None]:
    """`header`, then one event per frame a driver hands its `taps`, while the stream lasts.

    The tap runs in the driver's task for every frame: cheap, never blocks, never raises;
    frames a slow client cannot take are counted in the next event's `dropped`.
    """
    frames: asyncio.Queue[tuple[str, bytes, Any, float]] = asyncio.Queue(SNIFF_QUEUE)
    dropped = 0

    def tap(direction: str, wire: bytes, item: Any, _at: float) -> None:
        nonlocal dropped
        if not keep(direction, wire, item):
            return
        try:
            frames.put_nowait((direction, wire, item, time.time()))
        except asyncio.QueueFull:
            dropped += 1

    taps.append(tap)
    try:
        yield header
        previous: float | None = None
        while True:
            direction, wire, item, at = await frames.get()
            event = describe(direction, wire, item, at, previous)
            event["dropped"], dropped = dropped, 0
            previous = at
            yield event
    finally:
        taps.remove(tap)


# --------------------------------------------------------------------------- views


def pump_json(view: PumpView, config: Config) -> dict[str, Any]:
    return {
        "pump": view.number,
        "line": view.line,
        "address": config.address_of(view.number),
        "online": view.online,
        "state": view.state.name,
        "state_code": int(view.state),
        "status": view.status.value if view.status is not None else None,
        "nozzle": view.nozzle or None,
        "nozzle_out": view.nozzle_out,
        "grade": view.grade,
        "unit_price": view.unit_price,
        "volume": view.volume,
        "amount": view.amount,
        "authorization_id": view.authorization_id,
        "closed": view.closed,
        "sales": view.sales,
    }


# --------------------------------------------------------------------------- helpers


def _counters(line: object) -> LineCounters | None:
    counters = getattr(line, "counters", None)
    return counters if isinstance(counters, LineCounters) else None


def _gauge_counters(gauge: TankGauge) -> dict[str, int] | None:
    """A gauge driver's counters: a TLS console's are a line's, a Modbus bus has its own."""
    counters = getattr(gauge, "counters", None)
    return counters.as_dict() if isinstance(counters, LineCounters | BusCounters) else None


def _gauge_key(name: str) -> str:
    return f"gauge:{name}"  # a gauge may share its name with a pump line


def _line_rates(per_minute: Mapping[str, float]) -> dict[str, float | None]:
    """Frames, errors and timeouts per minute from either kind of counters."""
    if "requests" in per_minute:  # a Modbus bus: a request and its reply are two frames
        return {
            "frames": round(per_minute["requests"] + per_minute["replies"], 1),
            "errors": round(per_minute["exceptions"] + per_minute["malformed"], 1),
            "timeouts": per_minute["timeouts"],
            "retransmissions": None,
        }
    return {
        "frames": round(per_minute["frames_sent"] + per_minute["frames_received"], 1),
        "errors": round(
            per_minute["bad_crc"]
            + per_minute["malformed"]
            + per_minute["naks"]
            + per_minute["unexpected"],
            1,
        ),
        "timeouts": per_minute["timeouts"],
        "retransmissions": per_minute["retransmissions"],
    }


def _answers(path: Path) -> bool:
    """Is something listening on this socket path right now?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _limit(args: Args) -> int | None:
    if args.flag("all"):
        return None
    limit = args.opt_int("limit", lo=1, hi=MAX_LIMIT)
    return DEFAULT_LIMIT if limit is None else limit


def _price_change(old: Decimal, new: Decimal) -> Decimal:
    """The change from `old` to `new` in percent of `old`."""
    return (new - old) * 100 / old if old else Decimal("Infinity")


def _summary(result: object) -> str | None:
    if isinstance(result, Mapping):
        message = result.get("message")
        return None if message is None else str(message)
    return None


def _age_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((datetime.now(UTC) - moment).total_seconds(), 1)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await writer.drain()
