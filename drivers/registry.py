"""Protocols by name: what the station may build from a config entry's `protocol`.

Every dispenser-line and tank-gauge protocol has one entry here: its kind, the keys of its
own in the config, its defaults and valid addresses, its capabilities, a factory from the
station's config model to the driver, and its sniff describer. The daemon, the tank service,
the control server, the config loader and the CLI look a protocol up here and import no driver
module by name, so adding a protocol is a folder under drivers/ plus an entry in `_ENTRIES`.
(python-can's interface registry is the model.)

An entry imports its driver only when a factory or a describer is called: looking an entry up
is cheap and never loads pymodbus. drivers/ imports nothing from edgectl: a factory reads the
config model through the read-only shapes below (`LineSpec`, `GaugeSpec` ...), which the
edgectl config models satisfy structurally, and maps them to the driver's own settings.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from drivers.base import DispenserEvent, DispenserLine, TankGauge
from drivers.ifsf.profile_names import PROFILE_NAMES

# The plans a simulator is given, for the CLI to make (plain data: importing them is cheap).
from drivers.simulation import DispenserSimulation as DispenserSimulation
from drivers.simulation import GaugePlan as GaugePlan
from drivers.simulation import GaugeSimulation as GaugeSimulation
from drivers.simulation import LinePlan as LinePlan
from drivers.simulation import NetworkPlan as NetworkPlan
from drivers.simulation import NodePlan as NodePlan
from drivers.simulation import PumpPlan as PumpPlan
from drivers.simulation import ServePlan as ServePlan
from drivers.simulation import TankPlan as TankPlan

if TYPE_CHECKING:
    # Re-exported for the types of `Entry.prober()` (the CLI names no driver module).
    from drivers.decoding import Decoder as Decoder
    from drivers.listening import Heard as Heard
    from drivers.listening import Listener as Listener
    from drivers.probing import Found as Found
    from drivers.probing import Prober as Prober
    from drivers.probing import Setting as Setting
    from drivers.sniffing import Sniffer

Kind = Literal["dispenser", "gauge"]
DELIVERIES_INTERVAL_S: Final = 120.0  # how often a gauge's own delivery list is asked for


class Capability(enum.StrEnum):
    """What a protocol's driver does beyond its kind's interface (drivers/base.py)."""

    SNIFF = "sniff"  # its frames can be watched live (`edgectl sniff`)
    INVENTORY_FORMATS = "inventory formats"  # a console with more than one inventory format
    PER_TANK_OFFLINE = "per-tank offline"  # reports one tank offline while it answers for others
    GAUGE_DELIVERIES = "gauge deliveries"  # the gauge keeps and reports its own deliveries
    # Its readings carry the station's tank numbers (a bus the driver numbers), not the
    # gauge's own: the factory was told which station tank each device reads.
    STATION_TANK_NUMBERS = "station tank numbers"


class UnknownProtocol(LookupError):
    """No entry of that kind has that name."""


# ------------------------------------------------------------------ config shapes
class LineSpec(Protocol):
    """A dispenser line as configured (edgectl's LineConfig fits)."""

    @property
    def name(self) -> str: ...
    @property
    def port(self) -> str | None: ...
    @property
    def baud(self) -> int: ...
    @property
    def parity(self) -> str: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def stopbits(self) -> int: ...
    @property
    def reply_timeout_ms(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def offline_after(self) -> int: ...
    @property
    def poll_interval_ms(self) -> int: ...
    @property
    def idle_poll_ms(self) -> int: ...


class PumpSpec(Protocol):
    """A pump on a line as configured (edgectl's PumpConfig fits)."""

    @property
    def number(self) -> int: ...
    @property
    def address(self) -> int: ...
    @property
    def nozzles(self) -> Mapping[int, str]: ...
    @property
    def volume_decimals(self) -> int: ...
    @property
    def amount_decimals(self) -> int: ...
    @property
    def price_decimals(self) -> int: ...


class IfsfLineSpec(LineSpec, Protocol):
    """An IFSF line's own keys (edgectl's LineConfig fits); None: the profile's value."""

    @property
    def profile(self) -> str: ...
    @property
    def controller_lna(self) -> str | None: ...
    @property
    def tcp_port(self) -> int | None: ...
    @property
    def heartbeat_port(self) -> int | None: ...
    @property
    def heartbeat_to(self) -> Sequence[str]: ...
    @property
    def products(self) -> Mapping[str, int]: ...
    @property
    def heartbeat_interval_s(self) -> float | None: ...
    @property
    def missed_heartbeats(self) -> int | None: ...


class IfsfPumpSpec(PumpSpec, Protocol):
    """An IFSF pump: a fuelling point of a dispenser node (edgectl's PumpConfig fits)."""

    @property
    def node(self) -> str | None: ...
    @property
    def fp(self) -> int | None: ...
    @property
    def host(self) -> str | None: ...


class GaugeSpec(Protocol):
    """A tank gauge as configured (edgectl's GaugeConfig fits); keys of other protocols
    keep their defaults."""

    @property
    def name(self) -> str: ...
    @property
    def port(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def tcp_port(self) -> int | None: ...
    @property
    def baud(self) -> int: ...
    @property
    def parity(self) -> str: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def stopbits(self) -> int: ...
    @property
    def reply_timeout_ms(self) -> int: ...
    @property
    def offline_after(self) -> int: ...
    @property
    def security_code(self) -> str: ...
    @property
    def terminator_bytes(self) -> bytes: ...
    @property
    def etx(self) -> int: ...
    @property
    def units(self) -> str: ...
    @property
    def inventory_format(self) -> str: ...
    @property
    def register_map(self) -> Path | None: ...


class TankSpec(Protocol):
    """A tank a gauge reads, as configured (edgectl's TankConfig fits)."""

    @property
    def number(self) -> int: ...
    @property
    def gauge_tank(self) -> int: ...
    @property
    def device_id(self) -> int | None: ...


LineFactory = Callable[
    [LineSpec, Sequence[PumpSpec], Callable[[DispenserEvent], None]], DispenserLine
]
GaugeFactory = Callable[[GaugeSpec, Sequence[TankSpec], float], TankGauge]
SnifferFactory = Callable[[Any, "int | None", bool], "Sniffer"]
ProberFactory = Callable[[], "Prober"]
DecoderFactory = Callable[[], "Decoder"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One protocol. `title` names its device in messages ("a Veeder-Root console");
    `own_keys` are the config keys only it takes; `addresses` the valid pump addresses on a
    line (dispensers) and `sniff_addresses` what `sniff --address` filters on, None where the
    line has no addresses."""

    name: str
    kind: Kind
    title: str
    capabilities: frozenset[Capability] = frozenset()
    own_keys: tuple[str, ...] = ()
    # The values an own key takes where they are a few names (an IFSF line's profile).
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    addresses: range | None = None
    default_tcp_port: int | None = None
    default_reply_timeout_ms: int | None = None
    sniff_addresses: range | None = None
    # How people write an address on its line: DART pumps in hex (0x50), Modbus ids in decimal.
    address_format: str = "{}"
    # The name `edgectl probe --protocol` knows it by; None: it cannot be probed.
    probe_name: str | None = None
    # Config of a gauge protocol, checked by the loader without naming the protocol:
    # `required_keys` are own keys that must be given, each with what to say when it is missing;
    # `tank_device_ids` the `device_id` a tank on it gives (its probe's id on the bus), None
    # where the gauge numbers its tanks with `gauge_tank` alone; `needs_chart` why a tank on
    # it needs a tank chart, None where the gauge reports volumes itself.
    required_keys: tuple[tuple[str, str], ...] = ()
    tank_device_ids: range | None = None
    needs_chart: str | None = None
    # Config of a dispenser protocol's pumps, checked the same way: `pump_keys` are the pump
    # keys only it takes, `pump_required_keys` those that must be given (what to say when
    # missing), `nozzle_numbers` the nozzle numbers its pumps have; `product_numbers` names
    # the line key mapping grade ids to the dispenser's own product numbers, which every
    # grade on its pumps needs (None: the dispenser has none). Where `_pump_address` is set,
    # a pump's address is made from its own keys (an IFSF pump's node and FP), not given.
    # (`required_keys` and `own_keys` are, for a dispenser protocol, its line's.)
    pump_keys: tuple[str, ...] = ()
    pump_required_keys: tuple[tuple[str, str], ...] = ()
    # Pump keys that belong to the pump's device node (named by its first pump key), not to
    # the pump: the pumps of one node that give one must agree (an IFSF node's host).
    pump_node_keys: tuple[str, ...] = ()
    nozzle_numbers: range = range(1, 16)
    product_numbers: str | None = None
    _pump_address: Callable[[Any], int] | None = None
    _show_address: Callable[[int], str] | None = None
    # How `config check` shows a line's settings ("9600 8O1").
    _line_settings: Callable[[Any], str] | None = None
    _line: LineFactory | None = None
    _gauge: GaugeFactory | None = None
    _sniffer: SnifferFactory | None = None
    _prober: ProberFactory | None = None
    _decoder: DecoderFactory | None = None
    _simulation: Callable[[], DispenserSimulation | GaugeSimulation] | None = None

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def show_address(self, address: int) -> str:
        if self._show_address is not None:
            return self._show_address(address)
        return self.address_format.format(address)

    def line_settings(self, line: LineSpec) -> str:
        """A line's settings in a few words, for `config check`."""
        if self._line_settings is not None:
            return self._line_settings(line)
        return f"{line.baud} {line.bytesize}{line.parity[0].upper()}{line.stopbits}"

    def pump_address(self, pump: PumpSpec) -> int | None:
        """The pump's address made from its own keys; None where the config gives it."""
        return None if self._pump_address is None else self._pump_address(pump)

    def build_line(
        self, line: LineSpec, pumps: Sequence[PumpSpec], emit: Callable[[DispenserEvent], None]
    ) -> DispenserLine:
        """The line's driver (nothing opened yet: that happens in its `run`)."""
        if self._line is None:
            raise UnknownProtocol(f"{self.name} is not a dispenser protocol")
        return self._line(line, pumps, emit)

    def build_gauge(
        self,
        gauge: GaugeSpec,
        tanks: Sequence[TankSpec],
        *,
        deliveries_interval_s: float = DELIVERIES_INTERVAL_S,
    ) -> TankGauge:
        """The gauge's driver, reading `tanks` (nothing opened yet); one that keeps its own
        deliveries (GAUGE_DELIVERIES) is asked for them every `deliveries_interval_s`."""
        if self._gauge is None:
            raise UnknownProtocol(f"{self.name} is not a tank gauge protocol")
        return self._gauge(gauge, tanks, deliveries_interval_s)

    def sniffer(self, driver: object, address: int | None, no_polls: bool) -> Sniffer:
        """How to watch `driver` (built by this entry), filtered as asked."""
        if self._sniffer is None:
            raise UnknownProtocol(f"{self.name} cannot be sniffed")
        return self._sniffer(driver, address, no_polls)

    @property
    def simulated(self) -> bool:
        """Has it a simulator (`dispenser_simulation` or `gauge_simulation`)?"""
        return self._simulation is not None

    def dispenser_simulation(self) -> DispenserSimulation:
        """Its pumps simulated on a pty, with customers (`edgectl simulate`, `edgectl demo`)."""
        made = None if self._simulation is None else self._simulation()
        if not isinstance(made, DispenserSimulation):
            raise UnknownProtocol(f"{self.name} has no pump simulator")
        return made

    def gauge_simulation(self) -> GaugeSimulation:
        """Its console simulated on a pty over simulated tanks (`edgectl demo`)."""
        made = None if self._simulation is None else self._simulation()
        if not isinstance(made, GaugeSimulation):
            raise UnknownProtocol(f"{self.name} has no gauge simulator")
        return made

    def prober(self) -> Prober:
        """How `edgectl probe` asks a free line whether such devices are there."""
        if self._prober is None:
            raise UnknownProtocol(f"{self.name} cannot be probed")
        return self._prober()


# ------------------------------------------------------------------ factories
# Each imports its driver when called, never at import of this module.
def _serial(spec: LineSpec | GaugeSpec, port: str) -> Any:
    from drivers.transport import SerialTransport

    return SerialTransport(
        port,
        baud=spec.baud,
        parity=spec.parity,
        bytesize=spec.bytesize,
        stopbits=spec.stopbits,
        name=spec.name,
    )


def _dart_line(
    line: LineSpec, pumps: Sequence[PumpSpec], emit: Callable[[DispenserEvent], None]
) -> DispenserLine:
    from drivers.wayne_dart.driver import DartLine, DartLineSettings, DartPumpSettings

    assert line.port is not None  # the loader requires it (the entry's required_keys)
    parity_bits = 0 if line.parity == "none" else 1
    settings = DartLineSettings(
        name=line.name,
        baud=line.baud,
        bits_per_char=1 + line.bytesize + parity_bits + line.stopbits,
        reply_timeout_s=line.reply_timeout_ms / 1000,
        retries=line.retries,
        offline_after=line.offline_after,
        poll_interval_s=line.poll_interval_ms / 1000,
        idle_poll_s=line.idle_poll_ms / 1000,
    )
    pump_settings = [
        DartPumpSettings(
            address=p.address,
            nozzles=tuple(sorted(p.nozzles)),
            volume_decimals=p.volume_decimals,
            amount_decimals=p.amount_decimals,
            price_decimals=p.price_decimals,
        )
        for p in pumps
    ]
    return DartLine(settings, pump_settings, _serial(line, line.port), emit)


def _ifsf_address(pump: IfsfPumpSpec) -> int:
    """The station's address of an IFSF pump: its node's LNA and FP in one number, so that
    two pumps on one (node, FP) are two pumps at one address."""
    assert pump.node is not None and pump.fp is not None  # the loader requires them
    subnet, node = (int(part) for part in pump.node.split("."))
    return (subnet << 16) | (node << 8) | pump.fp


def _ifsf_show(address: int) -> str:
    return f"{address >> 16}.{(address >> 8) & 0xFF}/FP{address & 0xFF}"


def _ifsf_settings(line: IfsfLineSpec) -> str:
    parts = [f"profile {line.profile}"]
    if line.controller_lna is not None:
        parts.append(f"LNA {line.controller_lna}")
    if line.heartbeat_port is not None:
        parts.append(f"heartbeat UDP {line.heartbeat_port}")
    if line.heartbeat_to:
        parts.append(f"to {', '.join(line.heartbeat_to)}")
    return ", ".join(parts)


def _ifsf_line(
    line: LineSpec, pumps: Sequence[PumpSpec], emit: Callable[[DispenserEvent], None]
) -> DispenserLine:
    from drivers.ifsf.driver import IfsfLine, IfsfLineSettings, IfsfNozzle, IfsfPump
    from drivers.ifsf.profiles import profile

    spec = cast(IfsfLineSpec, line)
    dialect = profile(spec.profile)
    heartbeat_port = spec.heartbeat_port or dialect.heartbeat_port
    ifsf_pumps = cast(Sequence[IfsfPumpSpec], pumps)
    hosts = _node_hosts(ifsf_pumps)
    destinations = tuple(_endpoint(d, heartbeat_port) for d in spec.heartbeat_to)
    if not destinations and hosts and all(p.node in hosts for p in ifsf_pumps):
        # Every dispenser's address is known: tell them, not the whole subnet.
        ips = dict.fromkeys(host.partition(":")[0] for host in hosts.values())
        destinations = tuple((ip, heartbeat_port) for ip in ips)
    link: dict[str, Any] = {
        "heartbeat_port": heartbeat_port,
        "heartbeat_destinations": destinations or ((dialect.broadcast, heartbeat_port),),
        "reply_timeout_s": line.reply_timeout_ms / 1000,
        "peer_hosts": tuple(_peer_host(node, host) for node, host in hosts.items()),
    }
    if spec.controller_lna is not None:
        link["lnas"] = (_lna(spec.controller_lna),)
    if spec.tcp_port is not None:
        link["tcp_port"] = spec.tcp_port
    if spec.heartbeat_interval_s is not None:
        link["heartbeat_interval_s"] = spec.heartbeat_interval_s
    if spec.missed_heartbeats is not None:
        link["missed_heartbeats"] = spec.missed_heartbeats
    settings = IfsfLineSettings(name=line.name, link=dialect.link_settings(**link), profile=dialect)
    made = []
    for pump in ifsf_pumps:
        assert pump.node is not None and pump.fp is not None  # the loader requires them
        nozzles = tuple(
            IfsfNozzle(nozzle, logical=nozzle, product=spec.products[grade])
            for nozzle, grade in sorted(pump.nozzles.items())
        )
        made.append(IfsfPump(pump.address, _lna(pump.node), pump.fp, nozzles))
    return IfsfLine(settings, made, emit)


def _node_hosts(pumps: Sequence[IfsfPumpSpec]) -> dict[str, str]:
    """Each node's configured host, by node address (the loader made its pumps agree)."""
    return {p.node: p.host for p in pumps if p.node is not None and p.host is not None}


def _peer_host(node: str, host: str) -> Any:
    from drivers.ifsf.links import PeerHost

    ip, _, port = host.partition(":")
    return PeerHost(_lna(node), ip, int(port) if port else None)


def _lna(text: str) -> Any:
    from drivers.ifsf.encodings import Lna

    subnet, node = (int(part) for part in text.split("."))
    return Lna(subnet, node)


def _endpoint(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.partition(":")
    return (host, int(port) if port else default_port)


def _tls_gauge(gauge: GaugeSpec, tanks: Sequence[TankSpec], deliveries_s: float) -> TankGauge:
    from drivers.transport import TcpTransport, Transport
    from drivers.veeder_root.driver import InventoryFormat, TlsGauge, TlsGaugeSettings, Units

    transport: Transport
    if gauge.port is not None:
        transport = _serial(gauge, gauge.port)
    else:
        assert gauge.host is not None and gauge.tcp_port is not None
        transport = TcpTransport(gauge.host, gauge.tcp_port, gauge.name)
    settings = TlsGaugeSettings(
        name=gauge.name,
        security_code=gauge.security_code or None,
        terminator=gauge.terminator_bytes,
        etx=gauge.etx,
        reply_timeout_s=gauge.reply_timeout_ms / 1000,
        offline_after=gauge.offline_after,
        units=cast(Units, gauge.units),
        inventory_format=cast(InventoryFormat, gauge.inventory_format),
        # The console's tanks the station reads: one it stops reporting goes offline.
        tank_numbers=tuple(t.gauge_tank for t in tanks),
        deliveries_interval_s=deliveries_s,
    )
    return TlsGauge(settings, transport)


class GaugeSetupError(ValueError):
    """A gauge's config cannot be made into its driver (the loader checks this first)."""


def _modbus_bus(gauge: GaugeSpec, tanks: Sequence[TankSpec], deliveries_s: float) -> TankGauge:
    """A Modbus probe line: one device per `device_id` of the gauge's tanks (1 when unset);
    its readings carry the station's tank numbers, already in mm, °C and litres."""
    from drivers.modbus_probe.driver import (
        ModbusBusSettings,
        ModbusProbeBus,
        ProbeSettings,
        SerialLine,
        TcpLink,
    )
    from drivers.modbus_probe.registers import load_register_map

    if gauge.register_map is None:
        raise GaugeSetupError(f"gauges.{gauge.name}: a modbus_probe gauge needs a register_map")
    register_map = load_register_map(gauge.register_map)
    link: SerialLine | TcpLink
    if gauge.port is not None:
        parity = {"none": "N", "even": "E", "odd": "O"}[gauge.parity]
        link = SerialLine(
            gauge.port,
            baud=gauge.baud,
            parity=parity,  # type: ignore[arg-type]
            bytesize=gauge.bytesize,
            stopbits=gauge.stopbits,
        )
    else:
        assert gauge.host is not None
        link = TcpLink(gauge.host, gauge.tcp_port or 502)
    devices: dict[int, dict[int, int]] = {}
    for tank in tanks:
        devices.setdefault(tank.device_id or 1, {})[tank.number] = tank.gauge_tank
    settings = ModbusBusSettings(
        gauge.name,
        link,
        request_timeout_s=gauge.reply_timeout_ms / 1000,
        offline_after=gauge.offline_after,
    )
    probes = [ProbeSettings(device, register_map, on) for device, on in devices.items()]
    return ModbusProbeBus(settings, probes)


def _dart_sniffer(driver: Any, address: int | None, no_polls: bool) -> Sniffer:
    from drivers.wayne_dart.sniff import sniffer

    return sniffer(driver, address, no_polls)


def _ifsf_sniffer(driver: Any, address: int | None, no_polls: bool) -> Sniffer:
    from drivers.ifsf.sniff import sniffer

    return sniffer(driver, address, no_polls)


def _tls_sniffer(driver: Any, address: int | None, no_polls: bool) -> Sniffer:
    from drivers.veeder_root.sniff import sniffer

    return sniffer(driver, address, no_polls)


def _modbus_sniffer(driver: Any, address: int | None, no_polls: bool) -> Sniffer:
    from drivers.modbus_probe.sniff import sniffer

    return sniffer(driver, address, no_polls)


def _dart_prober() -> Prober:
    from drivers.wayne_dart.probe import prober

    return prober()


def _tls_prober() -> Prober:
    from drivers.veeder_root.probe import prober

    return prober()


def _modbus_prober() -> Prober:
    from drivers.modbus_probe.probe import prober

    return prober()


def _dart_simulation() -> DispenserSimulation:
    from drivers.wayne_dart.simulate import simulation

    return simulation()


def _ifsf_simulation() -> DispenserSimulation:
    from drivers.ifsf.sim import simulation

    return simulation()


def _tls_simulation() -> GaugeSimulation:
    from drivers.veeder_root.simulate import simulation

    return simulation()


def _dart_decoder() -> Decoder:
    from drivers.wayne_dart.decode import decoder

    return decoder()


def _tls_decoder() -> Decoder:
    from drivers.veeder_root.decode import decoder

    return decoder()


def _ifsf_decoder() -> Decoder:
    from drivers.ifsf.decode import decoder

    return decoder()


# ------------------------------------------------------------------ the entries
_DART_LINE_KEYS: Final = (
    "port",
    "baud",
    "parity",
    "bytesize",
    "stopbits",
    "retries",
    "offline_after",
    "poll_interval_ms",
    "idle_poll_ms",
)
_ENTRIES: Final[Mapping[str, Entry]] = MappingProxyType(
    {
        e.name: e
        for e in (
            Entry(
                name="wayne_dart",
                kind="dispenser",
                title="Wayne DART line",
                capabilities=frozenset({Capability.SNIFF}),
                addresses=range(0x50, 0x70),
                sniff_addresses=range(0x50, 0x70),
                address_format="0x{:02X}",
                own_keys=_DART_LINE_KEYS,
                required_keys=(
                    ("port", 'a DART line needs its serial port, e.g. port = "/dev/ttyUSB0"'),
                ),
                pump_keys=("address",),
                pump_required_keys=(
                    ("address", "a DART pump needs its address on the line (0x50..0x6F)"),
                ),
                probe_name="dart",
                _line=_dart_line,
                _sniffer=_dart_sniffer,
                _prober=_dart_prober,
                _decoder=_dart_decoder,
                _simulation=_dart_simulation,
            ),
            Entry(
                name="ifsf",
                kind="dispenser",
                title="IFSF line",
                capabilities=frozenset({Capability.SNIFF}),
                own_keys=(
                    "profile",
                    "controller_lna",
                    "tcp_port",
                    "heartbeat_port",
                    "heartbeat_to",
                    "products",
                    "heartbeat_interval_s",
                    "missed_heartbeats",
                ),
                choices=MappingProxyType({"profile": PROFILE_NAMES}),
                default_reply_timeout_ms=5000,
                pump_keys=("node", "fp", "host"),
                pump_node_keys=("host",),
                pump_required_keys=(
                    ("node", 'an IFSF pump needs its dispenser\'s node address, e.g. node = "1.1"'),
                    ("fp", "an IFSF pump needs its fuelling point on that node (1..4)"),
                ),
                nozzle_numbers=range(1, 9),
                product_numbers="products",
                _pump_address=_ifsf_address,
                _show_address=_ifsf_show,
                _line_settings=_ifsf_settings,
                _line=_ifsf_line,
                _sniffer=_ifsf_sniffer,
                _decoder=_ifsf_decoder,
                _simulation=_ifsf_simulation,
            ),
            Entry(
                name="veeder_root",
                kind="gauge",
                title="Veeder-Root console",
                capabilities=frozenset(
                    {
                        Capability.SNIFF,
                        Capability.INVENTORY_FORMATS,
                        Capability.PER_TANK_OFFLINE,
                        Capability.GAUGE_DELIVERIES,
                    }
                ),
                own_keys=("security_code", "terminator", "etx", "units", "inventory_format"),
                default_tcp_port=10001,
                default_reply_timeout_ms=3000,
                probe_name="tls",
                _gauge=_tls_gauge,
                _sniffer=_tls_sniffer,
                _prober=_tls_prober,
                _decoder=_tls_decoder,
                _simulation=_tls_simulation,
            ),
            Entry(
                name="modbus_probe",
                kind="gauge",
                title="Modbus probe line",
                capabilities=frozenset(
                    {Capability.SNIFF, Capability.PER_TANK_OFFLINE, Capability.STATION_TANK_NUMBERS}
                ),
                own_keys=("register_map",),
                required_keys=(
                    (
                        "register_map",
                        "a Modbus probe line needs the register map of its probes (a TOML "
                        "file, relative to this file)",
                    ),
                ),
                tank_device_ids=range(1, 248),
                needs_chart="a probe measures heights, not volumes",
                default_tcp_port=502,
                default_reply_timeout_ms=1000,
                sniff_addresses=range(1, 248),
                probe_name="modbus",
                _gauge=_modbus_bus,
                _sniffer=_modbus_sniffer,
                _prober=_modbus_prober,
            ),
        )
    }
)


def names(kind: Kind) -> tuple[str, ...]:
    """The protocols of one kind, sorted."""
    return tuple(sorted(name for name, e in _ENTRIES.items() if e.kind == kind))


def lookup(name: str, kind: Kind | None = None) -> Entry:
    """The entry of protocol `name` (of `kind`, when given); UnknownProtocol otherwise."""
    entry = _ENTRIES.get(name)
    if entry is None or (kind is not None and entry.kind != kind):
        what = "protocol" if kind is None else f"{kind} protocol"
        raise UnknownProtocol(f"no {what} named {name!r}")
    return entry


def entries() -> tuple[Entry, ...]:
    return tuple(_ENTRIES[name] for name in sorted(_ENTRIES))


def dispenser_simulation(name: str) -> DispenserSimulation:
    """The pump simulator of dispenser protocol `name`; UnknownProtocol if it has none."""
    return lookup(name, "dispenser").dispenser_simulation()


def decoders() -> tuple[Decoder, ...]:
    """Every protocol's `edgectl decode` subcommand, in the entries' order. Loading them
    imports the codecs."""
    return tuple(e._decoder() for e in _ENTRIES.values() if e._decoder is not None)


def probed() -> tuple[Entry, ...]:
    """The protocols `edgectl probe` can ask for, in the order `edgectl scan` tries them:
    dispensers first, then gauges, as listed above."""
    return tuple(e for e in _ENTRIES.values() if e.probe_name is not None)


# Protocols whose devices are found by listening for their announcements, not by asking a
# serial port (`edgectl probe --protocol NAME` with no PORT): IFSF's heartbeats. Kept apart
# from the entries, as the listener needs no driver.
def _ifsf_listener() -> Listener:
    from drivers.ifsf.probe import listener

    return listener()


_LISTENERS: Final[Mapping[str, Callable[[], Listener]]] = MappingProxyType({"ifsf": _ifsf_listener})


def listeners() -> tuple[Listener, ...]:
    """Every listener, in the order above (loading them imports their modules, which import
    no node layer: the CLI builds its parser with their options at every start)."""
    return tuple(factory() for factory in _LISTENERS.values())
