"""Station configuration: one TOML file, validated at start into frozen, typed models.

The models are pydantic dataclasses: `load_config` validates the file's data into them, and
`json_schema()` describes station.toml from them (shipped as config/station.schema.json for
editors). Every mistake stops the start with a single `ConfigError` that names the file and
the key path, for example ``station.toml: pumps[number=3].address: duplicate address 0x51 on
line "north" (pump 1 uses it)``, so a technician can fix the file without reading code.
Entries of arrays of tables are named by their number or name (``pumps[number=2]``,
``lines[name="north"]``), by their place (``pumps[2nd]``) where that is missing or shared.
The models are never changed at run time; runtime state lives elsewhere.

Money and volumes are written as TOML strings (``unit_price = "7.89"``) or integers and read
into `Decimal`; TOML floats are refused because binary floats cannot hold 7.89 exactly.

The file's rules are checked only when a file is loaded (the validation context is a
`_Loading`): a model built in code (`CloudConfig(host=..., client_id=...)`, `dataclasses.replace`)
is type-checked by pydantic and trusted for the rest. Each field's kind (`Text`, `Int`,
`Dec`, `File`, ...) reads one value with the messages below; a section's `_prepare` turns
file-only keys into fields and its `_check` states the rules between its keys; `Config._check`
those between sections. What a protocol needs of the config (its addresses, own keys,
defaults) is in its drivers.registry entry, so a new protocol adds no branch here.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

from pydantic import (
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from drivers import registry
from edgectl.cloud.signing import KEY_ID, InvalidKeyError, parse_public_key
from edgectl.errors import ConfigError
from edgectl.forecourt.tanks import (
    RECONCILIATION_ALLOWANCE_L,
    AlarmLimits,
    DeliveryRules,
    InvalidChart,
    Tank,
    TankChart,
)

__all__ = [
    "AuthorizationConfig",
    "CloudConfig",
    "CommandKey",
    "Config",
    "ControlConfig",
    "GaugeConfig",
    "GradeConfig",
    "LimitsConfig",
    "LineConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PumpConfig",
    "StationConfig",
    "StoreConfig",
    "TankConfig",
    "json_schema",
    "load_config",
    "parse_config",
    "refuse_placeholders",
]


# --------------------------------------------------------------------------- reading values


@dataclasses.dataclass(frozen=True)
class _Loading:
    """The validation context of a file being loaded: relative paths are taken from its
    folder."""

    source: Path
    raw: Mapping[str, Any]  # the file's data, as TOML gave it

    def resolve(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else (self.source.parent / path).resolve()


def _loading(info: ValidationInfo) -> _Loading | None:
    return info.context if isinstance(info.context, _Loading) else None


# Stands in a message for the bare name of the key it is about, filled in by `_translate`
# (a value's reader does not know its key's name).
_THE_KEY: Final = "\x00key\x00"


def _bad(message: str, *at: str | int) -> PydanticCustomError:
    """A mistake at `at` below the table being validated (the table itself when empty)."""
    return PydanticCustomError("config", "{message}", {"message": message, "at": at})


class _Kind:
    """A field's kind, as `Annotated` metadata: `check` reads the file's value (only when a file
    is loaded: a model built in code is type-checked by pydantic alone), `schema` is what the
    JSON Schema says of it."""

    def __init__(self, check: Callable[[Any, _Loading], Any], schema: Mapping[str, Any]):
        self.check = check
        self.schema = dict(schema)

    def _validate(self, value: Any, info: ValidationInfo) -> Any:
        load = _loading(info)
        return value if load is None else self.check(value, load)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_before_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return dict(self.schema)


def _kind(check: Callable[[Any, _Loading], Any], schema: Mapping[str, Any]) -> _Kind:
    return _Kind(check, schema)


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise _bad(f"expected a string, got {_show(value)}")
    return value


def _text(value: object, _: _Loading) -> str:
    text = _as_str(value)
    if not text.strip():
        raise _bad("must not be empty")
    return text


def _string(value: object, _: _Loading) -> str:
    return _as_str(value)


Text = Annotated[str, _kind(_text, {"type": "string", "minLength": 1})]
String = Annotated[str, _kind(_string, {"type": "string"})]


def _choice(options: Sequence[str]) -> _Kind:
    def check(value: object, _: _Loading) -> str:
        text = _as_str(value)
        if text not in options:
            shown = ", ".join(_show(c) for c in options)
            raise _bad(f"expected one of {shown}, got {_show(text)}")
        return text

    return _kind(check, {"enum": list(options)})


def _boolean(value: object, _: _Loading) -> bool:
    if not isinstance(value, bool):
        hint = ""
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            hint = " (write it without quotes)"
        raise _bad(f"expected true or false, got {_show(value)}{hint}")
    return value


Bool = Annotated[bool, _kind(_boolean, {"type": "boolean"})]


def _integer(
    lo: int | None = None, hi: int | None = None, choices: Sequence[int] | None = None
) -> _Kind:
    def check(value: object, _: _Loading) -> int:
        # bool is a subclass of int in Python, but `true` is never a number in a config.
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
                hint = " (write it without quotes)"
            raise _bad(f"expected an integer, got {_show(value)}{hint}")
        if choices is not None and value not in choices:
            raise _bad(f"expected one of {', '.join(str(c) for c in choices)}, got {value}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _bad(f"{value} is out of range ({_range(lo, hi)})")
        return value

    schema: dict[str, Any] = {"type": "integer"}
    if choices is not None:
        schema["enum"] = list(choices)
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return _kind(check, schema)


def _real(lo: float, hi: float) -> _Kind:
    """A real number (durations and the like, never money)."""

    def check(value: object, _: _Loading) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(f"expected a number, got {_show(value)}")
        if not lo <= value <= hi:  # also refuses nan and inf
            raise _bad(f"{value} is out of range ({_range(lo, hi)})")
        return float(value)

    return _kind(check, {"type": "number", "minimum": lo, "maximum": hi})


def _read_decimal(value: object, max_places: int, limit_name: str | None = None) -> Decimal:
    if isinstance(value, float):
        raise _bad(
            f"got the TOML float {value!r}; floats are binary and not exact, so money and "
            f'volumes are written as strings: {_THE_KEY} = "{value!r}"'
        )
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(f'expected a decimal string like "7.89", got {_show(value)}')
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise _bad(f'expected a decimal number like "7.89", got {_show(value)}')
    number = Decimal(value)
    places = _places(number)
    if places > max_places:
        by = f" by {limit_name}" if limit_name else ""
        raise _bad(f"{_show(value)} has {places} decimal places, at most {max_places} allowed{by}")
    return number


_DECIMAL_SCHEMA: Final = {
    "anyOf": [
        {"type": "string", "pattern": r"^[+-]?[0-9]+(\.[0-9]+)?$"},
        {"type": "integer"},
    ],
    "description": 'a decimal written as a string ("7.45") or an integer, never a float',
}


def _decimal(
    *, places: int = 4, positive: bool = False, lo: int | None = None, hi: int | None = None
) -> _Kind:
    def check(value: object, _: _Loading) -> Decimal:
        number = _read_decimal(value, places)
        if positive and number <= 0:
            raise _bad(f"must be greater than 0, got {_show_decimal(number)}")
        if lo is not None and hi is not None and not lo <= number <= hi:
            raise _bad(f"{_show_decimal(number)} is out of range ({lo}..{hi} %)")
        return number

    return _kind(check, _DECIMAL_SCHEMA)


def _file(value: object, load: _Loading) -> Path:
    """An existing file; a relative path is resolved against the config file's folder."""
    path = load.resolve(_text(value, load))
    if not path.is_file():
        raise _bad(f"{path}: {'is not a file' if path.exists() else 'not found'}")
    return path


def _where(value: object, load: _Loading) -> Path:
    """A path (that need not exist yet), resolved against the config file's folder."""
    return load.resolve(_text(value, load))


def _blank_is_none(value: object, load: _Loading) -> Path | None:
    """A path, or none when left blank."""
    text = _as_str(value)
    return load.resolve(text) if text.strip() else None


_PATH_SCHEMA: Final = {"type": "string", "minLength": 1, "description": "relative to this file"}
File = Annotated[Path, _kind(_file, _PATH_SCHEMA)]
Where = Annotated[Path, _kind(_where, _PATH_SCHEMA)]


# --------------------------------------------------------------------------- sections

_S = TypeVar("_S")
_T = TypeVar("_T")
_MODEL: Final = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def _section(cls: type[_S]) -> type[_S]:
    """A frozen pydantic dataclass read from one TOML table: its keys are its fields but
    `_DERIVED` (set by the loader, not in the file), plus `_FILE_ONLY` (turned into fields by
    `_prepare`); an unknown key is the first mistake reported, in file order."""

    def validate(
        model: type[Any], data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        load = _loading(info)
        if load is None or not isinstance(data, Mapping):
            return handler(data)  # built in code, or not a table (pydantic says so)
        allowed = model.file_keys()
        for key in data:  # file order, so the first typo in the file is reported
            if key not in allowed:
                raise _bad(f"unknown key {_show(key)}{_hint(key, allowed)}")
        prepared = model._prepare(dict(data), load)
        made = handler(prepared)
        made._check(frozenset(data), load)
        return made

    # Set before pydantic makes the class a dataclass (the decorator above `_section`).
    wrap: Any = model_validator(mode="wrap")
    cls._validate_table = wrap(classmethod(validate))  # type: ignore[attr-defined]
    return cls


class _Table:
    """What every section has: its file keys and the two hooks of `_section`."""

    _DERIVED: ClassVar[frozenset[str]] = frozenset()
    _FILE_ONLY: ClassVar[Mapping[str, dict[str, Any]]] = MappingProxyType({})
    # For the JSON Schema: keys the model needs that the file may leave out (the loader
    # derives them, or a file-only key stands for them), and keys the file needs that a
    # model built in code may leave out.
    _OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset()
    _REQUIRED_IN_FILE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def file_keys(cls) -> tuple[str, ...]:
        fields = getattr(cls, "__dataclass_fields__", {})
        return (*(k for k in fields if k not in cls._DERIVED), *cls._FILE_ONLY)

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        return data

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        """Rules between the table's keys; `given` are the keys the file wrote."""

    def _set(self, **values: Any) -> None:
        """What the loader derives (defaults that depend on other keys): still before anyone
        sees the model, so it stays frozen for its users."""
        for name, value in values.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, config=_MODEL)
@_section
class StationConfig(_Table):
    """Who this site is. `id` names it to the cloud; `currency` is an ISO-4217 code."""

    id: Text
    name: String = ""
    currency: String = "CNY"

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        if not _STATION_ID.fullmatch(self.id):
            raise _bad(
                f"{_show(self.id)} is not a valid station id (up to 64 letters, digits, "
                '"-" or "_"; it becomes part of MQTT topics)',
                "id",
            )
        if not _CURRENCY.fullmatch(self.currency):
            raise _bad(
                f"{_show(self.currency)} is not an ISO-4217 code (three upper-case letters, "
                'e.g. "CNY")',
                "currency",
            )


@dataclass(frozen=True, config=_MODEL)
@_section
class StoreConfig(_Table):
    """Where the SQLite store lives, its scheduled backups and how long old rows are kept.
    Relative paths are resolved against the config file."""

    path: Where
    # An online backup this often; 0: no scheduled backups.
    backup_interval_h: Annotated[float, _real(0.0, 24.0 * 366)] = 24.0
    backup_dir: Annotated[Path | None, _kind(_blank_is_none, _PATH_SCHEMA)] = None
    backup_keep: Annotated[int, _integer(1, 10_000)] = 7  # the newest backups kept
    # Sales, orders, audit older than this are deleted daily; 0: kept.
    keep_days: Annotated[int, _integer(0, 36_600)] = 0

    @property
    def backups(self) -> Path:
        return self.backup_dir if self.backup_dir is not None else self.path.parent / "backups"


_DECIMALS = _integer(0, 4)


@dataclass(frozen=True, config=_MODEL)
@_section
class GradeConfig(_Table):
    """A fuel grade (product) and how its figures are shown on a dispenser display."""

    id: Text
    name: Text
    # Per litre, quantized to `price_decimals` places.
    unit_price: Annotated[Decimal, _kind(lambda value, _: value, _DECIMAL_SCHEMA)]
    volume_decimals: Annotated[int, _DECIMALS] = 2
    amount_decimals: Annotated[int, _DECIMALS] = 2
    price_decimals: Annotated[int, _DECIMALS] = 2

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        # The price's places are bounded by price_decimals: read that first, then the price.
        places: int = 2
        if "price_decimals" in data:
            places = _at("price_decimals", _DECIMALS.check, data["price_decimals"], load)
        if "unit_price" in data:
            data["unit_price"] = _at(
                "unit_price",
                lambda value, _: _read_decimal(value, places, limit_name="price_decimals"),
                data["unit_price"],
                load,
            )
        return data

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        if self.unit_price <= 0:
            raise _bad(
                f"must be greater than 0, got {_show_decimal(self.unit_price)}", "unit_price"
            )
        self._set(unit_price=self.unit_price.quantize(Decimal(1).scaleb(-self.price_decimals)))


_PARITIES: Final = ("odd", "even", "none")
_LINE_BAUDS: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def _lna(value: object, _: _Loading) -> str:
    """An IFSF logical node address, "subnet.node" (both 1..255), as "2.1"."""
    text = _as_str(value)
    found = _LNA_TEXT.fullmatch(text.strip())
    if found is None or not all(1 <= int(part) <= 255 for part in found.groups()):
        raise _bad(
            f'{_show(text)} is not an IFSF node address: write "subnet.node", both 1..255, '
            'e.g. "1.1" (dispensers are on subnet 1, controllers on 2)'
        )
    return f"{int(found[1])}.{int(found[2])}"


_LNA_SCHEMA: Final = {
    "type": "string",
    "pattern": r"^[0-9]{1,3}\.[0-9]{1,3}$",
    "description": 'an IFSF logical node address "subnet.node", e.g. "1.1"',
}
NodeAddress = Annotated[str, _kind(_lna, _LNA_SCHEMA)]


def _dispenser_host(value: object, _: _Loading) -> str:
    """Where an IFSF dispenser node is: "IP" or "IP:port" (the TCP port it advertises)."""
    text = _as_str(value).strip()
    ip, colon, port = text.partition(":")
    try:
        address = ipaddress.IPv4Address(ip)
    except ValueError:
        raise _bad(
            f'{_show(text)} is not an IPv4 address: write "IP" or "IP:port", e.g. '
            '"192.168.1.21" or "192.168.1.21:5000" (the port its heartbeat advertises)'
        ) from None
    if address.is_unspecified or address.is_multicast or address == _BROADCAST:
        raise _bad(f"{_show(text)} is not a dispenser's address (one host's IPv4 address)")
    if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _bad(
            f"{_show(text)}: the port after ':' must be 1..65535 (the TCP port the dispenser "
            "advertises in its heartbeat)"
        )
    return f"{address}:{int(port)}" if colon else str(address)


_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")
DispenserHost = Annotated[
    str,
    _kind(
        _dispenser_host,
        {
            "type": "string",
            "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}(:[0-9]{1,5})?$",
            "description": 'an IFSF dispenser node\'s "IP" or "IP:port", e.g. "192.168.1.21:5000"',
        },
    ),
]


def _destinations(value: object, load: _Loading) -> tuple[str, ...]:
    """Heartbeat destinations: "host" (at heartbeat_port) or "host:port"."""
    if not isinstance(value, list):
        raise _bad(f'expected an array of addresses, e.g. ["192.168.1.255"], got {_show(value)}')
    found: list[str] = []
    for i, item in enumerate(value):
        text = _text_at(i, item, load)
        host, _, port = text.partition(":")
        if not host or any(c.isspace() for c in host) or "/" in host:
            raise _bad(f"{_show(text)} is not an address (a host, or host:port)", i)
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise _bad(f"{_show(text)}: the port after ':' must be 1..65535", i)
        found.append(text)
    if not found:
        raise _bad("at least one address is needed (leave the key out for the profile's)")
    return tuple(found)


def _text_at(i: int, value: object, load: _Loading) -> str:
    try:
        return _text(value, load)
    except PydanticCustomError as exc:
        raise _bad(_message(exc), i) from None


def _product_numbers(value: object, _: _Loading) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise _bad(
            f'expected a table of grade id = product number, e.g. {{ "95" = 2 }}, got '
            f"{_show(value)}"
        )
    numbers: dict[str, int] = {}
    for grade, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int):
            raise _bad(
                f"expected the dispenser's product number (an integer), got {_show(number)}", grade
            )
        if not 1 <= number <= _PRODUCT_NB_MAX:
            raise _bad(f"{number} is out of range (1..{_PRODUCT_NB_MAX})", grade)
        for other, taken in numbers.items():
            if taken == number:
                raise _bad(f"product number {number} is also grade {_show(other)}'s", grade)
        numbers[grade] = number
    return MappingProxyType(numbers)


_PRODUCT_NB_MAX: Final = 99_999_999  # Prod_Nb is bcd8


def _choices(key: str) -> tuple[str, ...]:
    """The values a protocol's own key takes, from its registry entry."""
    return tuple(c for e in registry.entries() for c in e.choices.get(key, ()))


@dataclass(frozen=True, config=_MODEL)
@_section
class LineConfig(_Table):
    """One line of dispensers with its protocol: a half-duplex serial bus (RS-485 or
    current loop, `port` and the serial keys), or dispensers on IP (IFSF: the controller's
    node, its heartbeat and the products). Keys of another protocol keep their defaults; the
    loader refuses them in the file. None for an IFSF key: the profile's value."""

    name: Text
    protocol: Annotated[str, _protocol("dispenser", "protocol")]
    port: Annotated[str | None, _kind(_text, {"type": "string", "minLength": 1})] = None
    baud: Annotated[int, _integer(choices=_LINE_BAUDS)] = 9600
    parity: Annotated[str, _choice(_PARITIES)] = "odd"
    bytesize: Annotated[int, _integer(choices=(7, 8))] = 8
    stopbits: Annotated[int, _integer(choices=(1, 2))] = 1
    # Its protocol's default (50 for wayne_dart, 5000 for ifsf).
    reply_timeout_ms: Annotated[int, _integer(5, 5000)] = 50
    retries: Annotated[int, _integer(0, 10)] = 3
    # Consecutive missed replies before a pump is declared offline.
    offline_after: Annotated[int, _integer(1, 20)] = 3
    # Pause between scan rounds; 0 = as fast as the line allows.
    poll_interval_ms: Annotated[int, _integer(0, 60000)] = 0
    # An idle pump is polled at most this often; busy ones at line speed.
    idle_poll_ms: Annotated[int, _integer(0, 10000)] = 200
    # ifsf: the dialect (drivers/ifsf/profiles.py).
    profile: Annotated[str, _choice(_choices("profile"))] = "generic"
    # ifsf: this controller's node address.
    controller_lna: NodeAddress | None = None
    # ifsf: this controller's TCP server (advertised in its heartbeat; 0: any free port).
    tcp_port: Annotated[int | None, _integer(0, 65535)] = None
    # ifsf: the UDP port heartbeats are sent to and heard on.
    heartbeat_port: Annotated[int | None, _integer(1, 65535)] = None
    # ifsf: where this controller's heartbeat goes: the subnet broadcast, or the
    # dispensers' addresses ("host", or "host:port").
    heartbeat_to: Annotated[
        tuple[str, ...],
        _kind(
            _destinations,
            {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
                "description": 'addresses, "host" or "host:port", e.g. ["192.168.1.255"]',
            },
        ),
    ] = ()
    # ifsf: grade id = the dispenser's product number (Prod_Nb).
    products: Annotated[
        Mapping[str, int],
        _kind(
            _product_numbers,
            {
                "type": "object",
                "additionalProperties": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": _PRODUCT_NB_MAX,
                },
                "description": 'grade id = the dispenser\'s Prod_Nb, e.g. { "92" = 1, "95" = 2 }',
            },
        ),
    ] = dataclasses.field(default_factory=lambda: MappingProxyType({}), hash=False)
    heartbeat_interval_s: Annotated[float | None, _real(0.1, 3600)] = None  # ifsf
    # ifsf: heartbeats missed before a dispenser is lost.
    missed_heartbeats: Annotated[int | None, _integer(1, 100)] = None

    @property
    def where(self) -> str:
        """Where the line is reached, for views and messages: its serial port, or on IP the
        TCP port its controller listens on."""
        if self.port is not None:
            return self.port
        return f"IP, TCP port {self.tcp_port}" if self.tcp_port else "IP"

    def __post_init__(self) -> None:
        object.__setattr__(self, "products", MappingProxyType(dict(self.products)))
        object.__setattr__(self, "heartbeat_to", tuple(self.heartbeat_to))

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        if "name" in data:
            _at("name", _text, data["name"], load)
        if "protocol" not in data:
            return data  # pydantic says it is missing
        protocol = _at("protocol", _protocol("dispenser", "protocol").check, data["protocol"], load)
        entry = registry.lookup(protocol, "dispenser")
        for other in registry.entries():
            for key in other.own_keys if other.kind == "dispenser" and other is not entry else ():
                if key in data:
                    raise _bad(f"is only used with protocol {_show(other.name)}", key)
        for key, why in entry.required_keys:
            if key not in data:
                raise _bad(f"missing: {why}", key)
        if entry.default_reply_timeout_ms is not None:
            data.setdefault("reply_timeout_ms", entry.default_reply_timeout_ms)
        return data


def _nozzles(value: object, _: _Loading) -> Mapping[int, str]:
    if not isinstance(value, Mapping):
        raise _bad(f"expected a table, got {_show(value)}")
    nozzles: dict[int, str] = {}
    for key, grade in value.items():
        if not _NOZZLE_KEY.fullmatch(key):
            raise _bad(f"nozzle numbers are integers 1..15, got {_show(key)}", key)
        number = int(key)
        if number not in _NOZZLES:
            raise _bad(f"nozzle number {number} is out of range (1..15)", key)
        if number in nozzles:
            raise _bad(f"nozzle {number} is listed twice", key)
        if not isinstance(grade, str):
            raise _bad(f"expected a string, got {_show(grade)}", key)
        nozzles[number] = grade
    if not nozzles:
        raise _bad('at least one nozzle is required, e.g. nozzles = { 1 = "95" }')
    return nozzles


@dataclass(frozen=True, config=_MODEL)
@_section
class PumpConfig(_Table):
    """A fuelling point: its station number, where it sits on a line, and its nozzles.

    `nozzles` maps nozzle number (1..15; an IFSF fuelling point's logical nozzles 1..8) to
    grade id. The three `*_decimals` are the pump's display decimals, taken by the loader
    from its grades (which must all agree). `address` is its address on the line: given
    (a DART pump's), or made by its protocol's entry from its own keys (an IFSF pump's
    `node` and `fp`).
    """

    _DERIVED: ClassVar[frozenset[str]] = frozenset(
        {"volume_decimals", "amount_decimals", "price_decimals"}
    )
    _OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset({"address"})

    number: Annotated[int, _integer(1, 99)]
    line: Text
    # Not hashed (a mapping proxy is unhashable); equality still compares it.
    nozzles: Annotated[
        Mapping[int, str],
        _kind(
            _nozzles,
            {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^([1-9]|1[0-5])$"},
                "additionalProperties": {"type": "string"},
                "description": 'nozzle number (1..15) = grade id, e.g. { 1 = "92", 2 = "95" }',
            },
        ),
    ] = dataclasses.field(hash=False)
    address: Annotated[int, _integer()] = 0  # made by the loader for an IFSF pump
    name: String = ""
    # ifsf: the dispenser node's address; its IP and port come from its heartbeat.
    node: NodeAddress | None = None
    # ifsf: the fuelling point of that node.
    fp: Annotated[int | None, _integer(1, 4)] = None
    # ifsf: where that node is, "IP" or "IP:port" (its advertised TCP port): a heartbeat
    # for its LNA from elsewhere is not taken as it. None: wherever its heartbeat says.
    host: DispenserHost | None = None
    volume_decimals: SkipJsonSchema[int] = 2
    amount_decimals: SkipJsonSchema[int] = 2
    price_decimals: SkipJsonSchema[int] = 2

    def __post_init__(self) -> None:
        # Keep a private, read-only copy so neither the caller's dict nor ours can change later.
        frozen = MappingProxyType(dict(sorted(self.nozzles.items())))
        object.__setattr__(self, "nozzles", frozen)


_MODES: Final = ("cloud", "auto", "attendant")


@dataclass(frozen=True, config=_MODEL)
@_section
class AuthorizationConfig(_Table):
    """Who releases pumps: the cloud (pay-at-pump), the controller itself, or an attendant.

    In "auto" mode the loader sets `auto_preset_amount` (default: limits.max_preset_amount);
    in other modes it is whatever the file says, or None.
    """

    mode: Annotated[str, _choice(_MODES)] = "cloud"
    auto_preset_amount: Annotated[Decimal | None, _decimal()] = None
    # An authorized pump not lifted in time is de-authorized.
    authorize_timeout_s: Annotated[float, _real(1, 3600)] = 120.0


@dataclass(frozen=True, config=_MODEL)
@_section
class LimitsConfig(_Table):
    """Bounds on presets sent to pumps, in the station currency and in litres."""

    max_preset_amount: Annotated[Decimal, _decimal(positive=True)] = Decimal("2000.00")
    max_preset_volume: Annotated[Decimal, _decimal(positive=True)] = Decimal("300.00")
    min_preset_amount: Annotated[Decimal, _decimal(positive=True)] = Decimal("1.00")
    # `edgectl price` refuses a change of more than this share of the price in force
    # (a typo like 70000 for 7.45) unless given --force.
    max_price_change_pct: Annotated[Decimal, _decimal(places=2)] = Decimal("20")

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        change = self.max_price_change_pct
        if not 0 < change <= 1000:
            raise _bad(f"must be above 0 and at most 1000, got {change}", "max_price_change_pct")
        if self.min_preset_amount > self.max_preset_amount:
            raise _bad(
                f"{_show_decimal(self.min_preset_amount)} is more than max_preset_amount "
                f"{_show_decimal(self.max_preset_amount)}",
                "min_preset_amount",
            )


@dataclass(frozen=True, config=_MODEL)
@_section
class LoggingConfig(_Table):
    level: Annotated[str, _choice(("debug", "info", "warning", "error"))] = "info"
    format: Annotated[str, _choice(("json", "console"))] = "json"


_DAY: Final = 24 * 3600.0


@dataclass(frozen=True, config=_MODEL)
@_section
class HealthConfig(_Table):
    """The thresholds of the health verdict (`edgectl health`, docs/operations.md): an
    operator whose uplink is worse, or whose disk is smaller, tunes them per station."""

    # A link down longer than this is a fault.
    cloud_outage_budget_s: Annotated[float, _real(0.0, 30 * _DAY)] = 15 * 60.0
    # The oldest message waiting for the broker.
    outbox_degraded_s: Annotated[float, _real(0.0, 30 * _DAY)] = 30 * 60.0
    outbox_critical_s: Annotated[float, _real(0.0, 365 * _DAY)] = 24 * 3600.0
    # The newest backup older than this × the interval.
    backup_late_factor: Annotated[float, _real(1.0, 100.0)] = 2.0
    disk_degraded_mb: Annotated[int, _integer(0, 2**31)] = 500
    disk_critical_mb: Annotated[int, _integer(0, 2**31)] = 100
    # Also degraded under this share of the disk free.
    disk_degraded_pct: Annotated[float, _real(0.0, 100.0)] = 10.0
    # The store holds records this far in the future.
    clock_behind_s: Annotated[float, _real(0.0, 365 * _DAY)] = 5 * 60.0

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        if self.outbox_critical_s < self.outbox_degraded_s:
            raise _bad(
                f"{self.outbox_critical_s:g} is less than outbox_degraded_s "
                f"({self.outbox_degraded_s:g}): the critical age must be the longer one",
                "outbox_critical_s",
            )
        if self.disk_critical_mb > self.disk_degraded_mb:
            raise _bad(
                f"{self.disk_critical_mb} is more than disk_degraded_mb "
                f"({self.disk_degraded_mb}): critical must be the smaller free space",
                "disk_critical_mb",
            )


@dataclass(frozen=True, config=_MODEL)
@_section
class CommandKey(_Table):
    """A cloud key whose signature the station accepts on commands."""

    _FILE_ONLY: ClassVar[Mapping[str, dict[str, Any]]] = MappingProxyType(
        {
            "public_key_file": {
                **_PATH_SCHEMA,
                "description": "a file holding the key (base64 or PEM)",
            }
        }
    )

    _OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset({"public_key"})

    id: Text
    # The raw 32-byte Ed25519 public key (in the file: its base64, or public_key_file).
    public_key: Annotated[
        bytes,
        _kind(
            lambda value, _: value,
            {
                "type": "string",
                "description": 'base64 of the raw key, as "edgectl cloud keygen" prints it',
            },
        ),
    ]

    def __repr__(self) -> str:
        return (
            f"CommandKey(id={self.id!r}, public_key={base64.b64encode(self.public_key).decode()!r})"
        )

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        key_id = _at("id", _text, data.get("id"), load) if "id" in data else None
        if key_id is not None and not KEY_ID.fullmatch(key_id):
            raise _bad(
                f'{_show(key_id)} is not a valid key id (1..64 letters, digits, ".", "_" or "-")',
                "id",
            )
        given = _at("public_key", _string, data["public_key"], load) if "public_key" in data else ""
        text: str | None = given or None
        named = data.pop("public_key_file", None)
        path = None if named is None else _at("public_key_file", _file, named, load)
        if text is not None and path is not None:
            raise _bad("give either public_key or public_key_file, not both", "public_key_file")
        if text is None and path is None:
            raise _bad("missing: give public_key (base64) or public_key_file", "public_key")
        where = "public_key"
        if path is not None:
            where = "public_key_file"
            try:
                text = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not a text key file"
                raise _bad(f"cannot read {path}: {reason or exc}", where) from None
        assert text is not None
        try:
            key = parse_public_key(text)
        except InvalidKeyError as exc:
            shown = str(path) if path is not None else _show(text)
            raise _bad(f"{shown} is not an Ed25519 public key: {exc}", where) from None
        data["public_key"] = key.public_bytes_raw()
        return data


CloudDelivery = Literal["broker", "backend"]
_CLOUD_DELIVERIES: Final[tuple[CloudDelivery, ...]] = ("broker", "backend")
_SESSION_EXPIRY_MAX: Final = 0xFFFFFFFF  # MQTT 5: the session never expires


def _host(value: object, load: _Loading) -> str:
    host = _text(value, load)
    if any(c.isspace() for c in host) or "/" in host:
        raise _bad(f"{_show(host)} is not a host name or address (no scheme, no path)")
    return host


def _topic_prefix(value: object, load: _Loading) -> str:
    prefix = _as_str(value)
    problem = _topic_prefix_problem(prefix)
    if problem:
        raise _bad(f"{_show(prefix)} {problem}")
    return prefix


def _client_id(value: object, load: _Loading) -> str:
    client_id = _as_str(value)
    if not client_id.strip() or len(client_id.encode()) > 256:
        raise _bad("must be 1..256 bytes and not blank")
    return client_id


@dataclass(frozen=True, config=_MODEL)
@_section
class CloudConfig(_Table):
    """The MQTT link to the cloud. The station always connects out; see docs/mqtt.md.

    File paths are absolute (the loader resolves them against the config file). `password`
    holds the secret itself, read from `password_file` when the file names one.
    """

    _FILE_ONLY: ClassVar[Mapping[str, dict[str, Any]]] = MappingProxyType(
        {"password_file": {**_PATH_SCHEMA, "description": "a file holding the password"}}
    )

    _OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset({"client_id"})

    host: Annotated[str, _kind(_host, {"type": "string", "minLength": 1})]
    # The loader's default: "edgectl-" and the station id.
    client_id: Annotated[str, _kind(_client_id, {"type": "string", "minLength": 1})]
    command_keys: tuple[CommandKey, ...] = ()
    port: Annotated[int, _integer(1, 65535)] = 8883
    topic_prefix: Annotated[str, _kind(_topic_prefix, {"type": "string", "minLength": 1})] = (
        "edgectl"
    )
    username: Annotated[str | None, _kind(_string, {"type": "string"})] = None
    password: Annotated[str | None, _kind(_string, {"type": "string"})] = dataclasses.field(
        default=None, repr=False
    )
    tls: Bool = True
    ca_file: Annotated[Path | None, _kind(_file, _PATH_SCHEMA)] = None
    cert_file: Annotated[Path | None, _kind(_file, _PATH_SCHEMA)] = None
    key_file: Annotated[Path | None, _kind(_file, _PATH_SCHEMA)] = None
    keepalive_s: Annotated[int, _integer(5, 3600)] = 20
    session_expiry_s: Annotated[int, _integer(60, _SESSION_EXPIRY_MAX)] = 3600
    heartbeat_s: Annotated[float, _real(0.1, 3600)] = 10.0
    reconnect_min_s: Annotated[float, _real(0.01, 3600)] = 1.0
    reconnect_max_s: Annotated[float, _real(0.01, 3600)] = 60.0
    max_inflight: Annotated[int, _integer(1, 1000)] = 32
    clock_skew_s: Annotated[float, _real(0, 3600)] = 30.0
    outbox_max_rows: Annotated[int, _integer(1000, 100_000_000)] = 100_000
    # "broker": a message is done at the broker's PUBACK. "backend": a guaranteed message is
    # kept until the backend acknowledges it with a signed `ack` (docs/mqtt.md).
    delivery: Annotated[CloudDelivery, _choice(_CLOUD_DELIVERIES)] = "broker"

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        # client_id's default (from the station id) is set by the Config; a placeholder here.
        data.setdefault("client_id", "-")
        if "tls" in data and "port" not in data and data["tls"] is False:
            data["port"] = 1883
        username = data.get("username")
        if username == "":
            data["username"] = None
        if data.get("password") == "":
            data["password"] = None
        path = data.pop("password_file", None)
        if path is not None:
            path = _at("password_file", _file, path, load)
            if data.get("password") is not None:
                raise _bad("give either password or password_file, not both", "password_file")
            try:
                # Editors add a final newline; it is never part of the password.
                password = path.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise _bad(f"cannot read {path}: {reason or exc}", "password_file") from None
            if not password:
                raise _bad(f"{path} is empty", "password_file")
            data["password"] = password
        if data.get("password") is not None and not data.get("username"):
            key = "password" if path is None else "password_file"
            raise _bad("a password needs a username", key)
        return data

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    raise _bad("is only used with tls = true", key)
        if (self.cert_file is None) != (self.key_file is None):
            given_key, missing = (
                ("cert_file", "key_file") if self.key_file is None else ("key_file", "cert_file")
            )
            raise _bad(
                f"missing: {given_key} is given, and a client certificate and its key go together",
                missing,
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise _bad(
                f"{self.reconnect_max_s:g} is less than reconnect_min_s {self.reconnect_min_s:g}",
                "reconnect_max_s",
            )
        if not self.command_keys:
            raise _bad(
                "at least one [[cloud.command_keys]] entry is required (the cloud's public key; "
                "make a pair with: edgectl cloud keygen --id KEYID)",
                "command_keys",
            )
        for i, command_key in enumerate(self.command_keys):
            if (j := _earlier_same(self.command_keys, i, _by("id"))) is not None:
                raise _bad(
                    f"duplicate key id {_show(command_key.id)} {_also_in(j, 'cloud.command_keys')}",
                    "command_keys",
                    i,
                    "id",
                )


DEFAULT_CONTROL_SOCKET: Final = Path("/run/edgectl/control.sock")
# sockaddr_un.sun_path holds 108 bytes on Linux, the last one a NUL.
_SOCKET_PATH_MAX: Final = 107
_GROUP_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


def _socket(value: object, load: _Loading) -> Path:
    path = _where(value, load)
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        raise _bad(
            f"{path} is {len(os.fsencode(path))} bytes long; a Unix socket path holds at most "
            f"{_SOCKET_PATH_MAX}: choose a shorter path"
        )
    return path


def _group(value: object, load: _Loading) -> str | None:
    group = _as_str(value) or None
    if group is not None and not _GROUP_NAME.fullmatch(group):
        raise _bad(f"{_show(group)} is not a valid group name")
    return group


@dataclass(frozen=True, config=_MODEL)
@_section
class ControlConfig(_Table):
    """The local control socket the technician CLI talks to (a Unix socket, never TCP).

    `socket` is absolute (the loader resolves a relative path against the config file). The
    socket is made mode 0660; `group`, when given, owns it so its members may use the CLI.
    """

    socket: Annotated[Path, _kind(_socket, {**_PATH_SCHEMA, "maxLength": _SOCKET_PATH_MAX})] = (
        DEFAULT_CONTROL_SOCKET
    )
    group: Annotated[str | None, _kind(_group, {"type": "string"})] = None


def _textfile(value: object, load: _Loading) -> Path:
    if isinstance(value, str) and not value.strip():
        raise _bad("must not be empty (leave the key out to write no file)")
    path = _where(value, load)
    if path.suffix != ".prom":
        raise _bad(
            f"{path} does not end in .prom: node_exporter's textfile collector reads "
            "only *.prom files (for example /var/lib/prometheus/node-exporter/edgectl.prom)"
        )
    return path


@dataclass(frozen=True, config=_MODEL)
@_section
class MetricsConfig(_Table):
    """Prometheus metrics without a TCP port: the exposition is written to `textfile` (for
    node_exporter's textfile collector) every `interval_s`; None: not written (`edgectl
    metrics` still shows it over the control socket).

    `textfile` is absolute (a relative path is resolved against the config file) and ends in
    `.prom`, the only files the collector reads. Its directory is not checked here: the
    daemon logs a missing one and keeps running.
    """

    textfile: Annotated[Path | None, _kind(_textfile, {**_PATH_SCHEMA, "pattern": r"\.prom$"})] = (
        None
    )
    interval_s: Annotated[float, _real(1.0, 3600.0)] = 15.0


GaugeUnits = Literal["metric", "us"]
# How a Veeder-Root console's inventory is asked: the computer-format i201 only, the printed
# (display-format) I201 report only, or i201 with I201 where the console refuses it.
InventoryFormat = Literal["computer", "display", "auto"]
_GAUGE_PROTOCOLS: Final = registry.names("gauge")
_GAUGE_SERIAL_KEYS: Final = ("baud", "parity", "bytesize", "stopbits")
_GAUGE_BAUDS: Final = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_TERMINATORS: Final[Mapping[str, bytes]] = MappingProxyType(
    {"none": b"", "lf": b"\n", "crlf": b"\r\n"}
)
_GAUGE_UNITS: Final[tuple[GaugeUnits, ...]] = ("metric", "us")
_INVENTORY_FORMATS: Final[tuple[InventoryFormat, ...]] = ("computer", "display", "auto")
_SECURITY_CODE: Final = re.compile(r"[!-~]{6}")
# Control characters that cannot end a TLS reply: they start, abort or break up messages.
_ETX_REFUSED: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x01: "SOH, which starts every message",
        0x0A: "LF, a line end inside display-format reports",
        0x0D: "CR, a line end inside display-format reports",
        0x1B: "ESC, which aborts a reply",
    }
)


def _protocol(kind: registry.Kind, what: str) -> _Kind:
    known = registry.names(kind)

    def check(value: object, load: _Loading) -> str:
        protocol = _text(value, load)
        if protocol not in known:
            raise _bad(f"unknown {what} {_show(protocol)} (known: {', '.join(sorted(known))})")
        return protocol

    return _kind(check, {"enum": list(known)})


def _security_code(value: object, _: _Loading) -> str:
    code = _as_str(value)
    if code and not _SECURITY_CODE.fullmatch(code):
        raise _bad(
            "must be the console's 6-character security code (letters, digits, punctuation, no "
            "spaces); leave it out when the console's security is off"
        )
    return code


def _etx(value: object, load: _Loading) -> int:
    etx: int = _integer(0, 0x7F).check(value, load)
    if etx in _ETX_REFUSED:
        raise _bad(f"{_hex(etx)} cannot end a reply: it is {_ETX_REFUSED[etx]}")
    if 0x20 <= etx < 0x7F:
        raise _bad(f"{_hex(etx)} is a printable character and could occur in a reply")
    return etx


@dataclass(frozen=True, config=_MODEL)
@_section
class GaugeConfig(_Table):
    """A tank gauge: a Veeder-Root TLS console, or a line of Modbus level probes.

    It is reached on a serial `port` or at `host`:`tcp_port`, exactly one of the two. Settings
    that do not apply (serial settings of a TCP gauge, TLS settings of a probe line) keep their
    defaults; the loader refuses them in the file. `register_map` is an absolute path.
    """

    name: Text
    protocol: Annotated[str, _protocol("gauge", "gauge protocol")]
    port: Annotated[str | None, _kind(_text, {"type": "string", "minLength": 1})] = None
    host: Annotated[str | None, _kind(_text, {"type": "string", "minLength": 1})] = None
    # Set with host: its protocol's default (10001 for veeder_root, 502 for modbus_probe).
    tcp_port: Annotated[int | None, _integer(1, 65535)] = None
    baud: Annotated[int, _integer(choices=_GAUGE_BAUDS)] = 9600
    parity: Annotated[str, _choice(_PARITIES)] = "none"
    bytesize: Annotated[int, _integer(choices=(7, 8))] = 8
    stopbits: Annotated[int, _integer(choices=(1, 2))] = 1
    # Its protocol's default (3000 for veeder_root, 1000 for modbus_probe).
    reply_timeout_ms: Annotated[int, _integer(50, 60000)] = 3000
    poll_interval_s: Annotated[float, _real(0.5, 3600)] = 10.0
    # Consecutive failed polls before the gauge's tanks are offline.
    offline_after: Annotated[int, _integer(1, 20)] = 3
    # veeder_root: 6 characters, "" = none.
    security_code: Annotated[str, _kind(_security_code, {"type": "string"})] = dataclasses.field(
        default="", repr=False
    )
    terminator: Annotated[str, _choice(tuple(_TERMINATORS))] = "none"  # veeder_root
    # veeder_root: the character that ends a reply (console setup 531).
    etx: Annotated[int, _kind(_etx, {"type": "integer", "minimum": 0, "maximum": 0x7F})] = 0x03
    # veeder_root: the console's unit setup; "us" figures (in, °F, US gal) are converted.
    units: Annotated[GaugeUnits, _choice(_GAUGE_UNITS)] = "metric"
    # veeder_root: i201, I201, or either.
    inventory_format: Annotated[InventoryFormat, _choice(_INVENTORY_FORMATS)] = "auto"
    # modbus_probe: the TOML register map of its probes.
    register_map: Annotated[Path | None, _kind(_file, _PATH_SCHEMA)] = None

    @property
    def terminator_bytes(self) -> bytes:
        return _TERMINATORS[self.terminator]

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        if "name" in data:
            _at("name", _text, data["name"], load)
        if "protocol" not in data:
            return data  # pydantic says it is missing
        protocol = _at(
            "protocol", _protocol("gauge", "gauge protocol").check, data["protocol"], load
        )
        entry = registry.lookup(protocol, "gauge")
        for other in registry.entries():
            for key in other.own_keys if other.kind == "gauge" and other is not entry else ():
                if key in data:
                    raise _bad(f"is only used with protocol {_show(other.name)}", key)
        if "port" in data and "host" in data:
            raise _bad("give either port (a serial line) or host (TCP), not both", "host")
        if "port" not in data and "host" not in data:
            raise _bad("missing: give port (a serial device) or host (a TCP address)", "port")
        if "host" in data:
            host = _at("host", _text, data["host"], load)
            if any(c.isspace() for c in host) or "/" in host:
                raise _bad(f"{_show(host)} is not a host name or address (no scheme, path)", "host")
            for key in _GAUGE_SERIAL_KEYS:
                if key in data:
                    raise _bad("is only used with a serial port, not with host", key)
            data.setdefault("tcp_port", entry.default_tcp_port)
        elif "tcp_port" in data:
            raise _bad("is only used with host (a gauge over TCP)", "tcp_port")
        data.setdefault("reply_timeout_ms", entry.default_reply_timeout_ms or 3000)
        for key, why in entry.required_keys:
            if key not in data:
                raise _bad(f"missing: {why}", key)
        return data


_ALARMS: Final = AlarmLimits()
_DELIVERIES: Final = DeliveryRules()
_DENSITY_15: Final = (Decimal(653), Decimal(1075))  # the range of table 54B, kg/m³
_DEFAULT_LOW_PRODUCT_SHARE: Final = Decimal("0.10")


def _density(value: object, _: _Loading) -> Decimal:
    density = _read_decimal(value, _MAX_DECIMALS)
    low, high = _DENSITY_15
    if not low <= density <= high:
        raise _bad(
            f"{_show_decimal(density)} kg/m³ is outside table 54B ({low}..{high} kg/m³ at "
            "15 °C); is it in kg/m³ (745, not 0.745)?"
        )
    return density


def _chart_number(value: object, at: int) -> Decimal:
    if isinstance(value, float):
        raise _bad(
            f"got the TOML float {value!r}; floats are not exact, so write chart heights and "
            f'volumes as integers or strings ("{value!r}")',
            at,
        )
    try:
        return _read_decimal(value, _MAX_DECIMALS)
    except PydanticCustomError as exc:
        raise _bad(_message(exc), at) from None


def _chart(value: object, _: _Loading) -> TankChart:
    if not isinstance(value, list):
        raise _bad(
            "expected an array of [height_mm, volume_l] pairs, e.g. chart = [[0, 0], "
            f"[100, 1200]], got {_show(value)}"
        )
    points: list[tuple[Decimal, Decimal]] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            shown = f"an array of {len(pair)}" if isinstance(pair, list) else _show(pair)
            raise _bad(f"expected a [height_mm, volume_l] pair, got {shown}", i)
        points.append((_chart_number(pair[0], i), _chart_number(pair[1], i)))
    try:
        return TankChart(tuple(points))
    except InvalidChart as exc:
        raise _bad(str(exc), *(() if exc.index is None else (exc.index,))) from None


_CHART_SCHEMA: Final = {
    "type": "array",
    "description": "[height_mm, volume_l] points from the bottom up, e.g. [[0, 0], [100, 1200]]",
    "items": {
        "type": "array",
        "prefixItems": [_DECIMAL_SCHEMA, _DECIMAL_SCHEMA],
        "minItems": 2,
        "maxItems": 2,
    },
}
_MAX_DECIMALS: Final = 4
_POSITIVE = _decimal(positive=True)


@dataclass(frozen=True, config=_MODEL)
@_section
class TankConfig(_Table):
    """A tank: what it holds and how big it is, which gauge reads it, and its alarm limits.

    `gauge_tank` is the tank's number on its gauge (a TLS console's tank number, or the tank
    within a multi-tank Modbus device); `device_id` is the Modbus unit id of its probe. `chart`
    is None only on a Veeder-Root gauge, which reports volumes itself; `chart_file` says where
    a chart read from a CSV file came from. The loader sets `low_product_l` (default: 10 % of
    capacity). `model()` is the tank as the forecourt domain uses it.
    """

    number: Annotated[int, _integer(1, 99)]
    grade: Text
    capacity_l: Annotated[Decimal, _POSITIVE]
    height_mm: Annotated[Decimal, _POSITIVE]
    # kg/m³ at 15 °C.
    density_15: Annotated[Decimal, _kind(_density, _DECIMAL_SCHEMA)]
    gauge: Text
    gauge_tank: Annotated[int, _integer(1, 99)] = 1
    device_id: Annotated[int | None, _integer()] = None
    name: String = ""
    safe_fill_pct: Annotated[Decimal, _decimal(lo=50, hi=100)] = Decimal(95)
    chart: Annotated[TankChart | None, _kind(_chart, _CHART_SCHEMA)] = None
    chart_file: Annotated[Path | None, _kind(_file, _PATH_SCHEMA)] = None
    low_product_l: Annotated[Decimal, _decimal()] = _ALARMS.low_product_l
    high_water_mm: Annotated[Decimal, _decimal()] = _ALARMS.high_water_mm
    overfill_pct: Annotated[Decimal, _decimal(lo=50, hi=100)] = _ALARMS.overfill_pct
    sudden_loss_l: Annotated[Decimal, _POSITIVE] = _ALARMS.sudden_loss_l
    hysteresis_pct: Annotated[Decimal, _decimal(lo=0, hi=50)] = _ALARMS.hysteresis_pct
    delivery_min_l: Annotated[Decimal, _POSITIVE] = _DELIVERIES.min_rise_l
    delivery_settle_s: Annotated[int, _integer(10, 3600)] = int(
        _DELIVERIES.settle_time.total_seconds()
    )
    reconciliation_limit_l: Annotated[Decimal, _decimal()] = RECONCILIATION_ALLOWANCE_L
    # Inventory to the cloud: on a product change this big, and at least this often.
    inventory_threshold_l: Annotated[Decimal, _POSITIVE] = Decimal(50)
    inventory_interval_s: Annotated[int, _integer(10, 86400)] = 300

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        if "density_15" not in data:
            raise _bad(
                "missing required key: the product's density at 15 °C in kg/m³, from its "
                "delivery note (about 720..775 for gasoline, 820..850 for diesel); the "
                "temperature compensation of every volume depends on it",
                "density_15",
            )
        return data

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        if self.chart is not None and self.chart_file is not None:
            raise _bad("give either chart or chart_file, not both", "chart_file")
        if self.chart_file is not None:
            self._set(chart=_chart_file(self.chart_file))
        if self.chart is not None:
            self._check_chart("chart" if self.chart_file is None else "chart_file", self.chart)
        capacity = self.capacity_l
        if "low_product_l" not in given:
            self._set(
                low_product_l=(capacity * _DEFAULT_LOW_PRODUCT_SHARE).quantize(Decimal("0.01"))
            )
        if not 0 <= self.low_product_l < capacity:
            raise _bad(
                f"{_show_decimal(self.low_product_l)} must be at least 0 and less than "
                f"capacity_l {_show_decimal(capacity)}",
                "low_product_l",
            )
        if not 0 <= self.high_water_mm < self.height_mm:
            raise _bad(
                f"{_show_decimal(self.high_water_mm)} must be at least 0 and less than height_mm "
                f"{_show_decimal(self.height_mm)}",
                "high_water_mm",
            )
        if self.delivery_min_l >= capacity:
            raise _bad(
                f"{_show_decimal(self.delivery_min_l)} must be less than capacity_l "
                f"{_show_decimal(capacity)}",
                "delivery_min_l",
            )
        if self.reconciliation_limit_l < 0:
            raise _bad(
                f"must be at least 0, got {_show_decimal(self.reconciliation_limit_l)}",
                "reconciliation_limit_l",
            )

    def _check_chart(self, key: str, chart: TankChart) -> None:
        if chart.max_height > self.height_mm:
            raise _bad(
                f"the chart reaches {chart.max_height} mm, above height_mm "
                f"{_show_decimal(self.height_mm)}",
                key,
            )
        if chart.max_volume > self.capacity_l:
            raise _bad(
                f"the chart holds {chart.max_volume} L at its top, more than capacity_l "
                f"{_show_decimal(self.capacity_l)}",
                key,
            )
        safe_fill = (self.capacity_l * self.safe_fill_pct / 100).quantize(Decimal("0.01"))
        if chart.max_volume < safe_fill:
            raise _bad(
                f"the chart ends at {chart.max_volume} L, below the safe fill volume {safe_fill} L "
                f"({self.safe_fill_pct} % of capacity_l): a fuller tank could not be measured",
                key,
            )

    def model(self) -> Tank:
        return Tank(
            number=self.number,
            grade=self.grade,
            capacity_l=self.capacity_l,
            height_mm=self.height_mm,
            density_15=self.density_15,
            chart=self.chart,
            safe_fill_pct=self.safe_fill_pct,
            name=self.name,
            alarms=AlarmLimits(
                low_product_l=self.low_product_l,
                high_water_mm=self.high_water_mm,
                overfill_pct=self.overfill_pct,
                sudden_loss_l=self.sudden_loss_l,
                hysteresis_pct=self.hysteresis_pct,
            ),
            deliveries=DeliveryRules(
                min_rise_l=self.delivery_min_l,
                settle_time=timedelta(seconds=self.delivery_settle_s),
            ),
            reconciliation_allowance_l=self.reconciliation_limit_l,
        )


def _chart_file(path: Path) -> TankChart:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise _bad(f"cannot read {path}: {reason or exc}", "chart_file") from None
    try:
        return TankChart.parse_csv(text)
    except InvalidChart as exc:
        raise _bad(f"{path}: {exc}", "chart_file") from None


_SECTIONS: Final = (
    "station",
    "store",
    "authorization",
    "limits",
    "logging",
    "grades",
    "lines",
    "pumps",
    "cloud",
    "control",
    "health",
    "metrics",
    "gauges",
    "tanks",
)


@dataclass(frozen=True, config=_MODEL)
@_section
class Config(_Table):
    """The whole, validated station configuration.

    Look-ups by id never raise KeyError. Every reference inside a validated config resolves
    (a nozzle's grade, a pump's line), so `grade`, `line` and `pump` return the model directly
    and raise `ConfigError` for an id that is not configured: such an id came from outside
    (cloud, CLI), and the caller answers "unknown pump" in its own terms.
    """

    _DERIVED: ClassVar[frozenset[str]] = frozenset({"source"})
    _REQUIRED_IN_FILE: ClassVar[tuple[str, ...]] = ("grades", "lines", "pumps")

    station: StationConfig
    store: StoreConfig
    authorization: AuthorizationConfig = AuthorizationConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    grades: tuple[GradeConfig, ...] = ()
    lines: tuple[LineConfig, ...] = ()
    pumps: tuple[PumpConfig, ...] = ()
    source: SkipJsonSchema[Path] = Path()  # the file it was read from, as given
    cloud: CloudConfig | None = None  # None: no [cloud] section, the station runs alone
    control: ControlConfig = ControlConfig()
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()
    gauges: tuple[GaugeConfig, ...] = ()  # empty: no [[gauges]], no tank gauging
    tanks: tuple[TankConfig, ...] = ()

    def grade(self, grade_id: str) -> GradeConfig:
        for grade in self.grades:
            if grade.id == grade_id:
                return grade
        raise self._unknown("grade", _show(grade_id), [_show(g.id) for g in self.grades])

    def line(self, name: str) -> LineConfig:
        for line in self.lines:
            if line.name == name:
                return line
        raise self._unknown("line", _show(name), [_show(line.name) for line in self.lines])

    def pump(self, number: int) -> PumpConfig:
        for pump in self.pumps:
            if pump.number == number:
                return pump
        raise self._unknown("pump", str(number), [str(p.number) for p in self.pumps])

    def address_of(self, number: int) -> str:
        """Pump `number`'s address on its line as people write it ("0x50", "1.1/FP1")."""
        pump = self.pump(number)
        return registry.lookup(self.line(pump.line).protocol).show_address(pump.address)

    def pumps_on(self, line_name: str) -> tuple[PumpConfig, ...]:
        """The pumps on one line, in file order; empty for an unknown line."""
        return tuple(p for p in self.pumps if p.line == line_name)

    def gauge(self, name: str) -> GaugeConfig:
        for gauge in self.gauges:
            if gauge.name == name:
                return gauge
        raise self._unknown("gauge", _show(name), [_show(g.name) for g in self.gauges])

    def tank(self, number: int) -> TankConfig:
        for tank in self.tanks:
            if tank.number == number:
                return tank
        raise self._unknown("tank", str(number), [str(t.number) for t in self.tanks])

    def tanks_on(self, gauge_name: str) -> tuple[TankConfig, ...]:
        """The tanks one gauge reads, in file order; empty for an unknown gauge."""
        return tuple(t for t in self.tanks if t.gauge == gauge_name)

    def tanks_for_grade(self, grade_id: str) -> tuple[TankConfig, ...]:
        """The tanks holding a grade (several when manifolded); empty when none is configured."""
        return tuple(t for t in self.tanks if t.grade == grade_id)

    def _unknown(self, what: str, key: str, defined: list[str]) -> ConfigError:
        return _error(
            self.source,
            "",
            f"no {what} {key} is configured (defined: {', '.join(defined) or 'none'})",
        )

    # -- the rules between sections, checked when a file is loaded

    @classmethod
    def _prepare(cls, data: dict[str, Any], load: _Loading) -> dict[str, Any]:
        # A missing [station] or [store] is reported as its first missing key.
        data.setdefault("station", {})
        data.setdefault("store", {})
        data["source"] = load.source
        return data

    def _check(self, given: frozenset[str], load: _Loading) -> None:
        self._check_authorization()
        self._check_grades_and_lines()
        self._check_pumps(load)
        if self.cloud is not None and "client_id" not in load.raw.get("cloud", {}):
            self._set(cloud=dataclasses.replace(self.cloud, client_id=f"edgectl-{self.station.id}"))
        self._check_gauges()
        self._check_tanks(load)

    def _check_authorization(self) -> None:
        limits, auth = self.limits, self.authorization
        preset = auth.auto_preset_amount
        if (
            preset is not None
            and not limits.min_preset_amount <= preset <= limits.max_preset_amount
        ):
            raise _bad(
                f"{_show_decimal(preset)} must be between limits.min_preset_amount "
                f"{_show_decimal(limits.min_preset_amount)} and limits.max_preset_amount "
                f"{_show_decimal(limits.max_preset_amount)}",
                "authorization",
                "auto_preset_amount",
            )
        if preset is None and auth.mode == "auto":
            auto = dataclasses.replace(auth, auto_preset_amount=limits.max_preset_amount)
            self._set(authorization=auto)

    def _check_grades_and_lines(self) -> None:
        if not self.grades:
            raise _bad("at least one [[grades]] entry is required", "grades")
        for i, grade in enumerate(self.grades):
            if (j := _earlier_same(self.grades, i, _by("id"))) is not None:
                raise _bad(
                    f"duplicate grade id {_show(grade.id)} {_also_in(j, 'grades')}",
                    "grades",
                    i,
                    "id",
                )
        if not self.lines:
            raise _bad("at least one [[lines]] entry is required", "lines")
        for i, line in enumerate(self.lines):
            key = registry.lookup(line.protocol, "dispenser").product_numbers
            numbered: Mapping[str, int] = getattr(line, key) if key is not None else {}
            for grade_id in numbered:
                if key is not None and grade_id not in {g.id for g in self.grades}:
                    raise _bad(
                        f"grade {_show(grade_id)} is not defined in [[grades]] "
                        f"(defined: {_listing([g.id for g in self.grades])})",
                        "lines",
                        i,
                        key,
                        grade_id,
                    )
            if (j := _earlier_same(self.lines, i, _by("name"))) is not None:
                raise _bad(
                    f"duplicate line name {_show(line.name)} {_also_in(j, 'lines')}",
                    "lines",
                    i,
                    "name",
                )
            # One task owns one bus (or one listening port): two lines on it would fight.
            for key, shown in (
                ("tcp_port", f"TCP port {line.tcp_port}"),
                ("port", f"port {_show(line.port)}"),
            ):
                if (j := _earlier_same(self.lines, i, _by(key))) is not None:
                    raise _bad(
                        f"{shown} is already used by line {_show(self.lines[j].name)}",
                        "lines",
                        i,
                        key,
                    )

    def _check_pumps(self, load: _Loading) -> None:
        grades = {g.id: g for g in self.grades}
        lines = {line.name: line for line in self.lines}
        if not self.pumps:
            raise _bad("at least one [[pumps]] entry is required", "pumps")
        raw = load.raw.get("pumps", [])
        for i, pump in enumerate(self.pumps):
            given = (
                frozenset(raw[i]) if i < len(raw) and isinstance(raw[i], Mapping) else frozenset()
            )
            line = lines.get(pump.line)
            if line is None:
                raise _bad(
                    f"unknown line {_show(pump.line)} (defined: {_listing(lines)})",
                    "pumps",
                    i,
                    "line",
                )
            entry = registry.lookup(line.protocol, "dispenser")
            self._check_pump_keys(pump, i, given, line, entry)
            for nozzle, grade_id in pump.nozzles.items():
                if grade_id not in grades:
                    raise _bad(
                        f"grade {_show(grade_id)} is not defined in [[grades]] "
                        f"(defined: {_listing(grades)})",
                        "pumps",
                        i,
                        "nozzles",
                        str(nozzle),
                    )
                numbers = entry.nozzle_numbers
                if nozzle not in numbers:
                    raise _bad(
                        f"nozzle {nozzle} is out of range for {_a(entry.title)} "
                        f"({numbers[0]}..{numbers[-1]})",
                        "pumps",
                        i,
                        "nozzles",
                        str(nozzle),
                    )
                key = entry.product_numbers
                if key is not None and grade_id not in getattr(line, key):
                    raise _bad(
                        f"grade {_show(grade_id)} has no product number in line "
                        f"{_show(line.name)}'s {key} (the dispenser's Prod_Nb, e.g. "
                        f"{key} = {{ {_show(grade_id)} = 1 }})",
                        "pumps",
                        i,
                        "nozzles",
                        str(nozzle),
                    )
            display = _display_decimals(pump, [grades[g] for g in pump.nozzles.values()], i)
            pump._set(
                volume_decimals=display.volume_decimals,
                amount_decimals=display.amount_decimals,
                price_decimals=display.price_decimals,
            )
            if (j := _earlier_same(self.pumps, i, _by("number"))) is not None:
                raise _bad(
                    f"duplicate pump number {pump.number} {_also_in(j, 'pumps')}",
                    "pumps",
                    i,
                    "number",
                )
            self._check_node_keys(pump, i, entry)
            if (j := _earlier_same(self.pumps, i, _by("line", "address"))) is not None:
                raise _bad(
                    f"duplicate address {entry.show_address(pump.address)} on line "
                    f"{_show(pump.line)} (pump {self.pumps[j].number} uses it)",
                    "pumps",
                    i,
                    entry.pump_keys[0] if entry.pump_keys else "address",
                )

    def _check_node_keys(self, pump: PumpConfig, i: int, entry: registry.Entry) -> None:
        """The keys that say where the pump's device node is: the pumps of one node that
        give them must agree (a pump that leaves one out takes the others')."""
        if not entry.pump_keys:
            return
        node_key = entry.pump_keys[0]
        for key in entry.pump_node_keys:
            mine = getattr(pump, key)
            if mine is None:
                continue
            for other in self.pumps[:i]:
                theirs = getattr(other, key)
                if (
                    other.line == pump.line
                    and getattr(other, node_key) == getattr(pump, node_key)
                    and theirs is not None
                    and theirs != mine
                ):
                    raise _bad(
                        f"pump {pump.number} gives {node_key} {getattr(pump, node_key)} {key} "
                        f"{_show(mine)} but pump {other.number} gives {_show(theirs)}: the "
                        f"pumps of one dispenser {node_key} are at one address",
                        "pumps",
                        i,
                        key,
                    )

    def _check_pump_keys(
        self,
        pump: PumpConfig,
        i: int,
        given: frozenset[str],
        line: LineConfig,
        entry: registry.Entry,
    ) -> None:
        """The pump's keys of its line's protocol: those of others refused, its own required,
        its address made from them where the protocol makes it."""
        for other in registry.entries():
            if other.kind != "dispenser" or other is entry:
                continue
            for key in other.pump_keys:
                if key in given and key not in entry.pump_keys:
                    raise _bad(
                        f"pump {pump.number} is on {entry.title} {_show(line.name)}: {key} is "
                        f"only used on {_a(other.title)}",
                        "pumps",
                        i,
                        key,
                    )
        for key, why in entry.pump_required_keys:
            if key not in given:
                raise _bad(f"missing: {why}", "pumps", i, key)
        address = entry.pump_address(pump)
        if address is not None:
            pump._set(address=address)
        valid = entry.addresses
        if valid is not None and pump.address not in valid:
            raise _bad(
                f"address {_hex(pump.address)} is out of range for {line.protocol} "
                f"({_hex(valid[0])}..{_hex(valid[-1])})",
                "pumps",
                i,
                "address",
            )

    def _check_gauges(self) -> None:
        for i, gauge in enumerate(self.gauges):
            if (j := _earlier_same(self.gauges, i, _by("name"))) is not None:
                raise _bad(
                    f"duplicate gauge name {_show(gauge.name)} {_also_in(j, 'gauges')}",
                    "gauges",
                    i,
                    "name",
                )
            for key, shown, same in (
                ("port", f"port {_show(gauge.port)}", _by("port")),
                ("host", f"{gauge.host}:{gauge.tcp_port}", _by("host", "tcp_port")),
            ):
                if (j := _earlier_same(self.gauges, i, same)) is not None:
                    raise _bad(
                        f"{shown} is already used by gauge {_show(self.gauges[j].name)}",
                        "gauges",
                        i,
                        key,
                    )
            # One task owns one bus: a gauge cannot share a serial port with a pump line.
            for line in self.lines:
                if gauge.port is not None and gauge.port == line.port:
                    raise _bad(
                        f"port {_show(line.port)} is already used by line {_show(line.name)}",
                        "gauges",
                        i,
                        "port",
                    )

    def _check_tanks(self, load: _Loading) -> None:
        grades = {g.id: g for g in self.grades}
        gauges = {g.name: g for g in self.gauges}
        raw = load.raw.get("tanks", [])
        for i, tank in enumerate(self.tanks):
            given = (
                frozenset(raw[i]) if i < len(raw) and isinstance(raw[i], Mapping) else frozenset()
            )
            at: tuple[str | int, ...] = ("tanks", i)
            if tank.grade not in grades:
                raise _bad(
                    f"grade {_show(tank.grade)} is not defined in [[grades]] "
                    f"(defined: {_listing(grades)})",
                    *at,
                    "grade",
                )
            gauge = gauges.get(tank.gauge)
            if gauge is None:
                raise _bad(
                    f"unknown gauge {_show(tank.gauge)} (defined: {_listing(gauges)})",
                    *at,
                    "gauge",
                )
            entry = registry.lookup(gauge.protocol, "gauge")
            ids = entry.tank_device_ids
            if ids is None:
                if "device_id" in given:
                    on = [e.name for e in registry.entries() if e.tank_device_ids is not None]
                    raise _bad(
                        f"is only used on a {' or '.join(on)} gauge; a {entry.title} numbers "
                        "its tanks with gauge_tank",
                        *at,
                        "device_id",
                    )
                if "gauge_tank" not in given:
                    raise _bad("missing required key", *at, "gauge_tank")
            elif tank.device_id is None:
                raise _bad("missing required key", *at, "device_id")
            elif tank.device_id not in ids:
                raise _bad(
                    f"{tank.device_id} is out of range ({ids[0]}..{ids[-1]})", *at, "device_id"
                )
            if entry.needs_chart is not None and tank.chart is None:
                raise _bad(
                    f"missing: tank on {entry.title} {_show(gauge.name)} needs its tank chart "
                    f"(chart or chart_file): {entry.needs_chart}",
                    *at,
                    "chart",
                )
            if (j := _earlier_same(self.tanks, i, _by("number"))) is not None:
                raise _bad(
                    f"duplicate tank number {tank.number} {_also_in(j, 'tanks')}", *at, "number"
                )
            same_input = _by("gauge", "device_id", "gauge_tank")  # device_id None for a TLS
            if (j := _earlier_same(self.tanks, i, same_input)) is not None:
                key, message = _same_probe(tank, self.tanks[j])
                raise _bad(message, *at, key)


def _display_decimals(pump: PumpConfig, grades: Sequence[GradeConfig], i: int) -> GradeConfig:
    """The one grade whose decimals stand for the pump; all its grades must agree."""
    first = grades[0]
    for grade in grades[1:]:
        for attr in ("volume_decimals", "amount_decimals", "price_decimals"):
            if getattr(grade, attr) != getattr(first, attr):
                raise _bad(
                    f"pump {pump.number} mixes grades with different {attr} "
                    f"({_show(first.id)} has {getattr(first, attr)}, "
                    f"{_show(grade.id)} has {getattr(grade, attr)}); "
                    "a dispenser has one display, so its grades must agree",
                    "pumps",
                    i,
                    "nozzles",
                )
    return first


def _by(*keys: str) -> Callable[[Any], object]:
    """What makes an entry the same as another: its `keys`' values; an entry whose first key
    is unset (None, or a TCP port 0) is the same as no other."""

    def value(entry: Any) -> object:
        values = tuple(getattr(entry, key) for key in keys)
        return None if values[0] is None or values[0] == 0 else values

    return value


def _earlier_same(entries: Sequence[_T], i: int, same: Callable[[_T], object]) -> int | None:
    """The index of the first entry before the i-th that `same` says is the same, if any."""
    mine = same(entries[i])
    if mine is None:
        return None
    return next((j for j in range(i) if same(entries[j]) == mine), None)


def _also_in(j: int, section: str) -> str:
    return f"(also in the {ordinal(j + 1)} [[{section}]])"


def _same_probe(tank: TankConfig, other: TankConfig) -> tuple[str, str]:
    """Key and message for two tanks read by the same gauge input."""
    gauge = _show(tank.gauge)
    if tank.device_id is None:
        where, key = f"tank {tank.gauge_tank}", "gauge_tank"
    elif tank.gauge_tank == 1:
        where, key = f"device {tank.device_id}", "device_id"
    else:
        where, key = f"device {tank.device_id} tank {tank.gauge_tank}", "gauge_tank"
    return key, f"gauge {gauge} {where} already reads tank {other.number}"


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file; any problem raises one `ConfigError`."""
    source = Path(path)
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    return parse_config(data, source=source)


_ADAPTER: Final = TypeAdapter(Config)


def parse_config(data: Mapping[str, Any], *, source: Path) -> Config:
    """Validate already-parsed TOML data; `source` names the file in messages and anchors
    relative paths."""
    try:
        return _ADAPTER.validate_python(data, context=_Loading(source, data))
    except ValidationError as exc:
        raise _translate(exc.errors()[0], data, source) from None


def _translate(error: Any, data: Mapping[str, Any], source: Path) -> ConfigError:
    """Pydantic's first error as the one message shape, the key path naming entries as a
    technician knows them."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "config":
        loc += tuple(ctx["at"])
        message = ctx["message"]
    elif kind == "missing":
        message = "missing required key"
    elif kind == "tuple_type":
        message = f"expected an array of tables ([[{loc[-1]}]]), got {_show(error['input'])}"
    elif kind in ("dataclass_type", "dataclass_exact_type", "dict_type", "model_type"):
        message = f"expected a table, got {_show(error['input'])}"
    else:  # a check left to pydantic (a type given in code, say)
        message = error["msg"]
    bare = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return _error(source, _key_path(data, loc), message.replace(_THE_KEY, bare))


# How an entry of each array of tables is named (`entry_path`).
_IDENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "grades": "id",
        "lines": "name",
        "pumps": "number",
        "gauges": "name",
        "tanks": "number",
        "command_keys": "id",
    }
)


def _key_path(data: object, loc: Sequence[str | int]) -> str:
    path = ""
    node: object = data
    key = ""
    for part in loc:
        if isinstance(part, int):
            items = node if isinstance(node, list) else []
            ident = _IDENTS.get(key)
            if ident is not None and part < len(items):
                path = entry_path(path, items, part, ident)
            else:
                path = f"{path}[{part}]"
            node = items[part] if part < len(items) else None
        else:
            key = part
            path = f"{path}.{part}" if path else part
            node = node.get(part) if isinstance(node, Mapping) else None
    return path


def json_schema() -> dict[str, Any]:
    """The JSON Schema of station.toml (draft 2020-12), from the models: what editors check
    a file against (config/station.schema.json, `edgectl config schema`)."""
    schema = _ADAPTER.json_schema(mode="validation")
    defs = schema.get("$defs", {})
    models: tuple[type[_Table], ...] = (Config, *_SECTION_MODELS)
    for model in models:
        target = schema if model is Config else defs.get(model.__name__)
        if target is None:
            continue
        target["properties"].update(model._FILE_ONLY)
        required = [k for k in target.get("required", []) if k not in model._OPTIONAL_IN_FILE]
        required += [k for k in model._REQUIRED_IN_FILE if k not in required]
        if required:
            target["required"] = required
        else:
            target.pop("required", None)
    _without_null(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgectl station.toml",
        "description": "A station's configuration; every key is documented in "
        "config/station.example.toml. Generated from edgectl/config.py by "
        "`edgectl config schema`: do not edit.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _without_null(node: object) -> None:
    """TOML has no null: an optional key is one left out, so `X | None` is described as X."""
    if isinstance(node, dict):
        options = node.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            options.remove({"type": "null"})
            if len(options) == 1:
                del node["anyOf"]
                node.update(options[0])
        if "default" in node and node["default"] is None:
            del node["default"]
        for value in node.values():
            _without_null(value)
    elif isinstance(node, list):
        for value in node:
            _without_null(value)


# The command key config/station.example.toml ships: a valid Ed25519 key whose private half
# nobody holds, so a station that lists it verifies no command. A file copied from the example
# parses, but is refused where it would be used (`edgectl config check`, `edgectl run`).
EXAMPLE_COMMAND_KEYS: Final = frozenset(
    {base64.b64decode("Zzdxg8iCoKZFERZbvA8BHfQ2FlkrFWX8sTvKxaUN1NE=")}
)


def refuse_placeholders(config: Config) -> None:
    """Raise `ConfigError` for what the example holds in place of a station's own values (its
    command key), with how to make the real one."""
    for key in config.cloud.command_keys if config.cloud is not None else ():
        if key.public_key in EXAMPLE_COMMAND_KEYS:
            raise _error(
                config.source,
                f"cloud.command_keys[id={_show(key.id)}]",
                "its public key is the placeholder of config/station.example.toml, whose "
                "private half nobody holds, so it would verify no command: make the cloud's "
                f"key pair with `edgectl cloud keygen --id {key.id}` (on the cloud side) and "
                "put the public key it prints here",
            )


# --------------------------------------------------------------------------- helpers

_STATION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_DECIMAL_TEXT: Final = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
_INT_TEXT: Final = re.compile(r"[+-]?(0x[0-9A-Fa-f]+|[0-9]+)")
_NOZZLE_KEY: Final = re.compile(r"[0-9]+")
_LNA_TEXT: Final = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})")
_NOZZLES: Final = range(1, 16)


def _at(key: str, read: Callable[[Any, _Loading], _T], value: object, load: _Loading) -> _T:
    """`read(value)`, its mistake reported at `key` of the table being validated."""
    try:
        return read(value, load)
    except PydanticCustomError as exc:
        raise _bad(_message(exc), key, *(exc.context or {}).get("at", ())) from None


def _message(exc: PydanticCustomError) -> str:
    return str((exc.context or {}).get("message", exc.message()))


def _topic_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot start every topic of the station, or None if it can."""
    if not prefix:
        return "is empty"
    if "+" in prefix or "#" in prefix:
        return 'contains an MQTT wildcard ("+" or "#")'
    if prefix.startswith("/") or prefix.endswith("/"):
        return 'must not start or end with "/"'
    if "//" in prefix:
        return "has an empty topic level"
    if prefix.startswith("$"):
        return 'must not start with "$" (topics reserved for the broker)'
    if "\x00" in prefix or any(c.isspace() for c in prefix):
        return "contains white space or NUL"
    return None


def entry_path(prefix: str, items: Sequence[object], index: int, ident: str) -> str:
    """The key path of one entry of an array of tables, named as a technician knows it: by
    its `ident` key (``pumps[number=2]``, ``lines[name="north"]``), or where that is missing,
    not a plain value or shared with another entry, by its place in the file
    (``pumps[2nd]``), never by a bare 0-based index."""
    item = items[index]
    if isinstance(item, Mapping):
        value = item.get(ident)
        plain = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.strip() != ""
        )
        if plain:
            same = [
                other
                for other in items
                if isinstance(other, Mapping)
                and type(other.get(ident)) is type(value)
                and other.get(ident) == value
            ]
            if len(same) == 1:
                return f"{prefix}[{ident}={_show(value)}]"
    return f"{prefix}[{ordinal(index + 1)}]"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _error(source: Path, where: str, message: str) -> ConfigError:
    """The one message shape: "<file>: <key path>: <what is wrong>"."""
    return ConfigError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _show(value: object) -> str:
    """A value as the technician wrote it in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"{value} (a {type(value).__name__})"  # dates and times


def _show_decimal(value: Decimal) -> str:
    return _show(str(value))


def _a(title: str) -> str:
    """ "a Wayne DART line", "an IFSF line"."""
    return f"{'an' if title[:1] in 'AEIOU' else 'a'} {title}"


def _hex(value: int) -> str:
    return f"0x{value:02X}" if value >= 0 else str(value)


def _range(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"at most {hi}"
    if hi is None:
        return f"at least {lo}"
    return f"{lo}..{hi}"


def _places(value: Decimal) -> int:
    """Significant decimal places: "7.890" has 2, "100" has 0."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _listing(names: Collection[str]) -> str:
    return ", ".join(_show(n) for n in names) or "none"


def _hint(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {_show(close[0])}?)"
    return f" (allowed: {', '.join(allowed)})"


_SECTION_MODELS: Final[tuple[type[_Table], ...]] = (
    StationConfig,
    StoreConfig,
    GradeConfig,
    LineConfig,
    PumpConfig,
    AuthorizationConfig,
    LimitsConfig,
    LoggingConfig,
    HealthConfig,
    CommandKey,
    CloudConfig,
    ControlConfig,
    MetricsConfig,
    GaugeConfig,
    TankConfig,
)
