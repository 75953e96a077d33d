"""The MQTT contract of docs/mqtt.md in code: topics, envelopes, payload builders, command parsing.

Pure: no I/O, no clock, no broker. The builders check their arguments and raise `ContractError`
rather than let the station publish something the cloud would reject; `parse_command` turns the
bytes of a command into a typed `Command` or a `ContractError` whose `code` is the result code to
answer with. The JSON Schemas in docs/schemas/ describe the same shapes; tests hold them together.

Signatures are not checked here (edgectl/cloud/signing.py does that over `Command.raw`), and
neither is anything that needs the station's state (pumps, orders, inbox).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeVar

from drivers.base import DispenserStatus
from edgectl.errors import CloudError, ConfigError
from edgectl.forecourt.fuelling_point import FPState

__all__ = [
    "ACCEPTED_CODES",
    "COMMAND_TYPES",
    "CONTRACT_VERSION",
    "DELIVERY",
    "EVENT_STREAMS",
    "GUARANTEED_STREAMS",
    "LATEST_VALUE",
    "MAX_COMMAND_BYTES",
    "MAX_COMMAND_LIFETIME",
    "MSG_ID_NAMESPACE",
    "NOZZLE_MAX",
    "OUTSIDE_SEQUENCE",
    "PUMP_MAX",
    "RESULT_CODES",
    "SCHEMA_VERSION",
    "STATION_KINDS",
    "AckData",
    "AuthorizeData",
    "AuthorizedBy",
    "CancelData",
    "ClearData",
    "Command",
    "CommandData",
    "CommandType",
    "ContractError",
    "Delivery",
    "GradePrice",
    "Kind",
    "OrderStatus",
    "PresetType",
    "PriceStatus",
    "PricesData",
    "ReplayData",
    "ResultStatus",
    "Severity",
    "StopData",
    "Topics",
    "alarm_data",
    "check_time",
    "command_envelope",
    "decimal_text",
    "encode",
    "encode_data",
    "encode_envelope",
    "envelope",
    "heartbeat_data",
    "message_id",
    "money",
    "online_data",
    "order_data",
    "parse_command",
    "parse_decimal",
    "parse_timestamp",
    "price_data",
    "prices_data",
    "pump_state_data",
    "rejection_data",
    "result_data",
    "sale_data",
    "timestamp",
]

SCHEMA_VERSION: Final = "v1"

CommandType: TypeAlias = Literal["authorize", "cancel", "stop", "prices", "clear", "ack", "replay"]
Kind: TypeAlias = Literal[
    "result",
    "order",
    "sale",
    "alarm",
    "price",
    "pump_state",
    "prices",
    "online",
    "heartbeat",
    "inventory",
    "delivery",
    "reconciliation",
]
ResultStatus: TypeAlias = Literal["accepted", "rejected"]
OrderStatus: TypeAlias = Literal[
    "accepted", "authorized", "fuelling", "completed", "expired", "cancelled", "failed"
]
PriceStatus: TypeAlias = Literal["applied", "failed"]
PresetType: TypeAlias = Literal["amount", "volume"]
AuthorizedBy: TypeAlias = Literal["auto", "attendant", "cloud", "none"]
Severity: TypeAlias = Literal["info", "warning", "critical"]

COMMAND_TYPES: Final[tuple[CommandType, ...]] = (
    "authorize",
    "cancel",
    "stop",
    "prices",
    "clear",
    "ack",
    "replay",
)
STATION_KINDS: Final[tuple[Kind, ...]] = (
    "result",
    "order",
    "sale",
    "alarm",
    "price",
    "pump_state",
    "prices",
    "online",
    "heartbeat",
    "inventory",
    "delivery",
    "reconciliation",
)
EVENT_STREAMS: Final = frozenset(
    {"order", "sale", "alarm", "price", "heartbeat", "inventory", "delivery", "reconciliation"}
)
# Published by the session itself, never through the outbox (the Last Will cannot be an outbox
# row, and a heartbeat stuck behind a backlog would say nothing): seq 0, outside the sequence.
OUTSIDE_SEQUENCE: Final = frozenset({"online", "heartbeat"})
# Contract 1.1: a state of which only the newest value matters (thinned while queued). Its
# messages carry seq 0 and a version per key (pump, tank, the price list) instead of a place in
# a sequence, so thinning them leaves no gap anywhere.
LATEST_VALUE: Final = frozenset({"pump_state", "prices", "inventory"})
# Every other kind sent through the outbox is guaranteed: gap-free seq per stream (= kind),
# never thinned; what `ack` and `replay` name.
GUARANTEED_STREAMS: Final[tuple[str, ...]] = (
    "result",
    "order",
    "sale",
    "alarm",
    "price",
    "delivery",
    "reconciliation",
)
CONTRACT_VERSION: Final = "1.1"

RESULT_CODES: Final = frozenset(
    {
        "ok",
        "already_cleared",
        "paid_elsewhere",
        "unknown",
        "duplicate",
        "invalid",
        "unsigned",
        "bad_signature",
        "unknown_key",
        "expired",
        "not_yet_valid",
        "wrong_station",
        "unknown_pump",
        "pump_offline",
        "pump_busy",
        "pump_closed",
        "unknown_nozzle",
        "unknown_grade",
        "preset_out_of_limits",
        "wrong_currency",
        "unknown_order",
        "order_not_cancellable",
        "pump_refused",
        "shutting_down",
        "partial",
        "beyond_stream",
    }
)
# The only codes a result with status "accepted" may carry; every other code is a rejection.
# A sale paid another way is settled: the clear reached its end and must not be retried.
# A replay of which only part is still held re-sends that part: done, but say so.
ACCEPTED_CODES: Final = frozenset({"ok", "already_cleared", "paid_elsewhere", "partial"})

_ORDER_STATUSES: Final[tuple[OrderStatus, ...]] = (
    "accepted",
    "authorized",
    "fuelling",
    "completed",
    "expired",
    "cancelled",
    "failed",
)
_PRESET_TYPES: Final[tuple[PresetType, ...]] = ("amount", "volume")
_AUTHORIZED_BY: Final[tuple[AuthorizedBy, ...]] = ("auto", "attendant", "cloud", "none")
_SEVERITIES: Final[tuple[Severity, ...]] = ("info", "warning", "critical")

MAX_COMMAND_BYTES: Final = 64 * 1024
# A command is valid for at most this long after it was issued. The inbox must keep command ids
# for at least this plus twice the clock skew: then every replay is either found there or expired.
MAX_COMMAND_LIFETIME: Final = timedelta(hours=24)
_MAX_SKEW_S: Final = MAX_COMMAND_LIFETIME.total_seconds()  # more: not the same clock at all
PUMP_MAX: Final = 99  # as [[pumps]].number in the config
NOZZLE_MAX: Final = 15
SEQ_MAX: Final = 2**63 - 1  # SQLite INTEGER
_MAX_GRADES: Final = 64

# Python's `$` also matches before a final newline and `\d` matches any Unicode digit, so every
# pattern is ASCII-only and used with fullmatch.
_ID: Final = re.compile(r"[!-~]{1,128}")
_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_STATION: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# No lone surrogate either: JSON's "\ud800" decodes to a str that UTF-8 cannot encode, so the
# station could neither store nor publish it.
_GRADE: Final = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]{1,64}")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DECIMAL_MAX_CHARS: Final = 32
_TIMESTAMP: Final = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?Z"
)
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_TEXT: Final = 1000

_ID_RULE: Final = "1 to 128 printable ASCII characters, no spaces"
_CODE_RULE: Final = "a lower-case code such as pump_refused"
_GRADE_RULE: Final = "1 to 64 characters, no control characters"

# msg_id = UUIDv5(MSG_ID_NAMESPACE, "{station}:{seq}"); docs/mqtt.md gives the same recipe.
MSG_ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:edgectl:v1:msg_id")


# --------------------------------------------------------------------------- errors


class ContractError(CloudError):
    """A message does not meet the contract. `code` is the result code to answer with.

    `cmd_id` is the command's id when the payload got far enough to name a valid one, so the
    station can look it up in its inbox (a re-delivered command gets its stored result, even
    after it has expired) and otherwise answer under that id.
    """

    code = "invalid"

    def __init__(self, message: str, *, code: str = "invalid", cmd_id: str | None = None):
        if code not in RESULT_CODES:
            raise ValueError(f"{code!r} is not a result code")
        super().__init__(message, code=code)
        self.cmd_id = cmd_id


def _invalid(path: str, problem: str) -> ContractError:
    return ContractError(f"{path}: {problem}")


def _show(value: object) -> str:
    """A value from the wire, cut short: error messages go back out in a result. Never
    raises (an int of over 4300 digits has no repr)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else f"{text[:39]}…"


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class Delivery:
    qos: int
    retain: bool


# The QoS and retain flag of each kind of station message (the topic table of docs/mqtt.md).
DELIVERY: Final[Mapping[str, Delivery]] = MappingProxyType(
    {
        "result": Delivery(qos=1, retain=False),
        "order": Delivery(qos=1, retain=False),
        "sale": Delivery(qos=1, retain=False),
        "alarm": Delivery(qos=1, retain=False),
        "price": Delivery(qos=1, retain=False),
        "heartbeat": Delivery(qos=0, retain=False),
        "online": Delivery(qos=1, retain=True),
        "pump_state": Delivery(qos=1, retain=True),
        "prices": Delivery(qos=1, retain=True),
        "inventory": Delivery(qos=1, retain=False),
        "delivery": Delivery(qos=1, retain=False),
        "reconciliation": Delivery(qos=1, retain=False),
    }
)


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one station: `{prefix}/v1/{station}/…`."""

    prefix: str
    station: str

    def __post_init__(self) -> None:
        levels = self.prefix.split("/")
        if (
            self.prefix.startswith("$")
            or any(not level for level in levels)
            or any(char in self.prefix for char in "+#\x00")
        ):
            raise ConfigError(
                f"cloud.topic_prefix: {self.prefix!r} is not a usable topic prefix (non-empty "
                "levels separated by '/', no '+', '#', and not starting with '$')"
            )
        if not _STATION.fullmatch(self.station):
            raise ConfigError(f"station.id: {self.station!r} cannot be used in a topic")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{SCHEMA_VERSION}/{self.station}"

    def command(self, type: str) -> str:
        if type not in COMMAND_TYPES:
            raise _invalid("command type", f"{type!r} is not one of {', '.join(COMMAND_TYPES)}")
        return f"{self.base}/cmd/{type}"

    @property
    def commands_filter(self) -> str:
        return f"{self.base}/cmd/+"

    @property
    def result(self) -> str:
        return f"{self.base}/result"

    def event(self, stream: str) -> str:
        if stream not in EVENT_STREAMS:
            raise _invalid("event stream", f"{stream!r} is not one of {sorted(EVENT_STREAMS)}")
        return f"{self.base}/evt/{stream}"

    @property
    def heartbeat(self) -> str:
        return self.event("heartbeat")

    @property
    def online(self) -> str:
        return f"{self.base}/state/online"

    def pump_state(self, pump: int) -> str:
        return f"{self.base}/state/pump/{_integer(pump, 'pump', 1, PUMP_MAX)}"

    @property
    def prices(self) -> str:
        return f"{self.base}/state/prices"

    def parse_command_topic(self, topic: str) -> str | None:
        """The command type a topic names, or None when it is not one of our command topics.

        Any single level after `cmd/` is returned, known or not: `parse_command` rejects an
        unknown type as `invalid`, so the cloud gets an answer rather than silence.
        """
        head = f"{self.base}/cmd/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :]
        if not rest or "/" in rest:
            return None
        return rest


# --------------------------------------------------------------------------- values


def decimal_text(value: Decimal) -> str:
    """A Decimal exactly as it is, in plain notation: no exponent, trailing zeros kept."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ContractError(f"{value!r} is not a finite Decimal")
    text = format(value, "f")
    return text[1:] if text.startswith("-") and value == 0 else text


def money(value: Decimal, places: int) -> str:
    """`value` with exactly `places` decimals ("200.00"). Never rounds: a value with more
    significant decimals raises, because rounding money is a decision made before formatting."""
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 9:
        raise ContractError(f"places must be an integer from 0 to 9, got {places!r}")
    decimal_text(value)  # finite Decimal or ContractError
    try:
        quantized = value.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation:
        raise ContractError(f"{value} is too large to show with {places} decimals") from None
    if quantized != value:
        raise ContractError(f"{value} has more than {places} decimals")
    return decimal_text(quantized)


def parse_decimal(text: object, field: str) -> Decimal:
    """A decimal string from a message ("25.37"); a JSON number, an exponent, a sign other than
    a leading '-', NaN or Infinity is `invalid`, never silently converted."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        raise _invalid(
            field, f'must be a decimal string such as "200.00", not the number {_show(text)}'
        )
    if not isinstance(text, str):
        raise _invalid(field, 'must be a decimal string such as "200.00"')
    if len(text) > _DECIMAL_MAX_CHARS or not _DECIMAL.fullmatch(text):
        raise _invalid(field, f'{_show(text)} is not a decimal string such as "200.00"')
    return Decimal(text)


def timestamp(moment: datetime) -> str:
    """The contract's form of a time: UTC, milliseconds, 'Z' ("2026-11-24T10:21:07.412Z")."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ContractError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: object, field: str) -> datetime:
    """An ISO-8601 UTC time ending in 'Z', with up to 6 decimals of seconds."""
    if not isinstance(text, str) or not _TIMESTAMP.fullmatch(text):
        raise _invalid(field, 'must be a UTC time such as "2026-11-24T10:20:00.000Z"')
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # the pattern lets through days that do not exist (Feb 30)
        raise _invalid(field, f"{text!r} is not a real date and time") from None


def _integer(value: object, path: str, lo: int, hi: int) -> int:
    # bool is an int to Python but not to JSON; 3.0 is a float here even if JSON Schema says
    # "integer".
    if type(value) is not int or not lo <= value <= hi:
        raise _invalid(path, f"must be an integer from {lo} to {hi}")
    return value


def _string(value: object, path: str, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(path, f"must be {rule}")
    return value


_Choice = TypeVar("_Choice", bound=str)


def _choice(value: object, path: str, choices: Sequence[_Choice]) -> _Choice:
    """`value` as the member of `choices` it equals (so a Literal stays a Literal for mypy)."""
    for choice in choices:
        if value == choice:
            return choice
    raise _invalid(path, f"must be one of {', '.join(choices)}")


def _text(value: object, path: str, max_chars: int = _MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > max_chars:
        raise _invalid(path, f"must be a string of at most {max_chars} characters")
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(path, "must be true or false")
    return value


def _quantity(value: Decimal | None, path: str) -> str | None:
    """An outgoing volume, amount, price or totals reading: not negative, or null."""
    return None if value is None else _decimal_out(value, path, positive=False)


def _decimal_out(value: Decimal, path: str, *, positive: bool) -> str:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise _invalid(path, f"must be a finite Decimal, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _invalid(
            path, f"must be {'greater than 0' if positive else 'at least 0'}, got {value}"
        )
    text = decimal_text(value)
    if len(text) > _DECIMAL_MAX_CHARS:
        raise _invalid(path, f"{text[:20]}… has more than {_DECIMAL_MAX_CHARS} characters")
    return text


def _optional(value: object, path: str, pattern: re.Pattern[str], rule: str) -> str | None:
    return None if value is None else _string(value, path, pattern, rule)


def _when(value: str | None, path: str) -> str | None:
    if value is not None:
        parse_timestamp(value, path)
    return value


# --------------------------------------------------------------------------- envelope


def message_id(station: str, seq: int, epoch: str = "") -> str:
    """The msg_id of outbox message `seq`: the same on every re-send, after any restart.

    `epoch` names the station's store, so a rebuilt store (seq back at 1) never repeats an id.
    It is `str(uuid.uuid5(MSG_ID_NAMESPACE, f"{station}:{epoch}:{seq}"))`, written out with
    hashlib: a third of the cost of building the UUID object, once for every message a replay
    sends (issue 12).
    """
    digest = hashlib.sha1(_MSG_ID_PREFIX + f"{station}:{epoch}:{seq}".encode()).hexdigest()
    # RFC 4122 name-based SHA-1: version 5 in the 13th hex digit, variant 10 in the 17th's
    # two top bits.
    return (
        f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-"
        f"{_VARIANT[int(digest[16], 16) & 3]}{digest[17:20]}-{digest[20:32]}"
    )


_MSG_ID_PREFIX: Final = MSG_ID_NAMESPACE.bytes
_VARIANT: Final = "89ab"


def envelope(
    kind: str,
    station: str,
    seq: int,
    ts: str,
    data: Mapping[str, Any],
    msg_id: str | None = None,
    *,
    version: int | None = None,
) -> dict[str, Any]:
    """Wrap a payload for publishing.

    A guaranteed kind carries `seq` ≥ 1, its place in its own stream (contract 1.1: gap-free per
    station and kind), and `version` null. A `LATEST_VALUE` kind carries seq 0 and `version` ≥ 1,
    the version of its key (pump, tank, price list). The kinds in `OUTSIDE_SEQUENCE` carry seq 0
    and version null. Unless given one, the msg_id is `message_id(station, seq)`, or for seq 0
    derived from the content and `ts`: the publisher gives each outbox row's own.
    """
    _choice(kind, "kind", STATION_KINDS)
    _string(station, "station", _STATION, "a station id")
    if kind in OUTSIDE_SEQUENCE or kind in LATEST_VALUE:
        if seq != 0 or type(seq) is not int:
            raise _invalid("seq", f"{kind} is outside the sequences: seq must be 0")
    else:
        _integer(seq, "seq", 1, SEQ_MAX)
    if kind in LATEST_VALUE:
        _integer(version, "version", 1, SEQ_MAX)
    elif version is not None:
        raise _invalid("version", f"{kind} has no version (only {sorted(LATEST_VALUE)} do)")
    parse_timestamp(ts, "ts")
    payload = dict(data)
    if msg_id is None:
        msg_id = message_id(station, seq) if seq else _content_id(station, kind, ts, payload)
    else:
        _string(msg_id, "msg_id", _UUID, "a lower-case UUID")
    return {
        "schema": f"edgectl/{SCHEMA_VERSION}/{kind}",
        "msg_id": msg_id,
        "station": station,
        "seq": seq,
        "version": version,
        "ts": ts,
        "data": payload,
    }


def _content_id(station: str, kind: str, ts: str, data: Mapping[str, Any]) -> str:
    content = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return str(uuid.uuid5(MSG_ID_NAMESPACE, f"{station}:{kind}:{ts}:{content}"))


def encode(message: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON. Only JSON's own types go out: a float (the contract has none) or a
    Decimal (format it first) is refused rather than converted."""
    _check_wire(message, "message")
    text = json.dumps(dict(message), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("message", "holds a lone surrogate, which is not UTF-8 text") from None


def encode_data(data: Mapping[str, Any]) -> str:
    """The `data` of a message as the outbox keeps it until it is sent: checked as `encode`
    checks a whole message and written as `encode` writes it, so that `encode_envelope` can
    send it as it is."""
    _check_wire(data, "data")
    text = json.dumps(dict(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("data", "holds a lone surrogate, which is not UTF-8 text") from None
    return text


def encode_envelope(
    kind: str,
    station: str,
    seq: int,
    ts: str,
    data: str,
    msg_id: str,
    *,
    version: int | None = None,
) -> bytes:
    """`encode(envelope(kind, station, seq, ts, json.loads(data), msg_id, version=version))`
    for a `data` from `encode_data` (every outbox row's): the envelope is checked as
    `envelope` checks it and `data` goes in as it is, not decoded and encoded again for every
    message sent (a replay sends a backlog of them as fast as the broker takes them).

    The head is written out rather than built as a dict for `json.dumps`: every member in it
    passed a check that leaves nothing JSON would escape (a kind of `STATION_KINDS`, a station
    id, integers, a UUID, a timestamp), so the bytes are those `encode` writes. The kind and the
    station, the same for most messages, are checked once.
    """
    latest, outside = _envelope_kind(kind, station)
    if latest or outside:
        if seq != 0 or type(seq) is not int:
            raise _invalid("seq", f"{kind} is outside the sequences: seq must be 0")
    elif type(seq) is not int or not 1 <= seq <= SEQ_MAX:
        raise _invalid("seq", f"must be an integer from 1 to {SEQ_MAX}")
    if latest:
        _integer(version, "version", 1, SEQ_MAX)
    elif version is not None:
        raise _invalid("version", f"{kind} has no version (only {sorted(LATEST_VALUE)} do)")
    parse_timestamp(ts, "ts")
    _string(msg_id, "msg_id", _UUID, "a lower-case UUID")
    return (
        f'{{"schema":"edgectl/{SCHEMA_VERSION}/{kind}","msg_id":"{msg_id}",'
        f'"station":"{station}","seq":{seq},"version":{"null" if version is None else version},'
        f'"ts":"{ts}","data":{data}}}'
    ).encode()


@functools.lru_cache(maxsize=64)
def _envelope_kind(kind: str, station: str) -> tuple[bool, bool]:
    """Check a kind and a station as `envelope` does; whether the kind is a latest value, and
    whether it is outside the sequences."""
    _choice(kind, "kind", STATION_KINDS)
    _string(station, "station", _STATION, "a station id")
    return kind in LATEST_VALUE, kind in OUTSIDE_SEQUENCE


def _check_wire(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value <= SEQ_MAX:
            raise _invalid(path, f"{_show(value)} does not fit a 64-bit integer")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(path, f"key {key!r} is not a string")
            _check_wire(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_wire(item, f"{path}[{index}]")
    elif isinstance(value, float):
        raise _invalid(path, f"{value!r} is a binary float; money and volume are decimal strings")
    else:
        raise _invalid(path, f"{type(value).__name__} is not a JSON value")


# --------------------------------------------------------------------------- station payloads


def result_data(
    cmd_id: str | None,
    type: str | None,
    status: ResultStatus,
    code: str,
    message: str,
    order_id: str | None = None,
    duplicate: bool = False,
) -> dict[str, Any]:
    """The answer to a command. `cmd_id` / `type` are None when the command was too broken to
    name them (not JSON, an unknown type). A duplicate repeats the stored status and code."""
    _choice(status, "status", ("accepted", "rejected"))
    if code not in RESULT_CODES:
        raise _invalid("code", f"{code!r} is not a result code")
    if (status == "accepted") != (code in ACCEPTED_CODES):
        raise _invalid("code", f"{code!r} cannot go with status {status!r}")
    return {
        "cmd_id": _optional(cmd_id, "cmd_id", _ID, _ID_RULE),
        "type": None if type is None else _choice(type, "type", COMMAND_TYPES),
        "status": status,
        "code": code,
        "message": _text(message, "message"),
        "order_id": _optional(order_id, "order_id", _ID, _ID_RULE),
        "duplicate": _boolean(duplicate, "duplicate"),
    }


def rejection_data(error: ContractError, command_type: str) -> dict[str, Any]:
    """The result for a command `parse_command` refused, built so that it cannot fail: an
    unknown command type becomes null, the cmd_id is the error's (null when unknown)."""
    known = command_type if command_type in COMMAND_TYPES else None
    text = str(error)
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "…"
    return result_data(error.cmd_id, known, "rejected", error.code, text)


def order_data(
    order_id: str,
    pump: int,
    status: OrderStatus,
    reason: str | None = None,
    sale: Mapping[str, Any] | None = None,
    authorized_at: str | None = None,
    *,
    preset_type: PresetType,
    preset_value: Decimal,
    currency: str,
    expires_at: str | None = None,
) -> dict[str, Any]:
    """One step of a pay-at-pump order, with the order's preset so each step stands alone.

    `completed` carries the sale (from `sale_data`) and is the only status that does: once fuel
    has flowed the order ends `completed`, whatever stopped it, so every other final status
    tells the cloud that nothing was drawn and the payment can be released. `failed` needs a
    `reason` code.
    """
    _choice(status, "status", _ORDER_STATUSES)
    if (status == "completed") != (sale is not None):
        raise _invalid("sale", "a completed order carries its sale, and only a completed one")
    if status == "failed" and reason is None:
        raise _invalid("reason", "a failed order needs a reason code")
    return {
        "order_id": _string(order_id, "order_id", _ID, _ID_RULE),
        "pump": _integer(pump, "pump", 1, PUMP_MAX),
        "status": status,
        "preset": {
            "type": _choice(preset_type, "preset_type", _PRESET_TYPES),
            "value": _decimal_out(preset_value, "preset_value", positive=True),
        },
        "currency": _string(currency, "currency", _CURRENCY, "three capital letters"),
        "reason": _optional(reason, "reason", _CODE, _CODE_RULE),
        "authorized_at": _when(authorized_at, "authorized_at"),
        "expires_at": _when(expires_at, "expires_at"),
        "sale": None if sale is None else dict(sale),
    }


def sale_data(
    *,
    sale_id: int,
    uid: str,
    pump: int,
    nozzle: int,
    grade: str,
    volume: Decimal,
    amount: Decimal,
    unit_price: Decimal,
    currency: str,
    ended_at: str,
    authorized_by: AuthorizedBy,
    order_id: str | None = None,
    price_set_id: str | None = None,
    total_volume_before: Decimal | None = None,
    total_amount_before: Decimal | None = None,
    total_volume_after: Decimal | None = None,
    total_amount_after: Decimal | None = None,
) -> dict[str, Any]:
    """A finished sale, whatever authorized it. Keyword-only: too many figures to mix up."""
    return {
        "sale_id": _integer(sale_id, "sale_id", 1, SEQ_MAX),
        "uid": _string(uid, "uid", _ID, _ID_RULE),
        "pump": _integer(pump, "pump", 1, PUMP_MAX),
        "nozzle": _integer(nozzle, "nozzle", 1, NOZZLE_MAX),
        "grade": _string(grade, "grade", _GRADE, _GRADE_RULE),
        "volume": _quantity(volume, "volume"),
        "amount": _quantity(amount, "amount"),
        "unit_price": _quantity(unit_price, "unit_price"),
        "currency": _string(currency, "currency", _CURRENCY, "three capital letters"),
        "authorized_by": _choice(authorized_by, "authorized_by", _AUTHORIZED_BY),
        "order_id": _optional(order_id, "order_id", _ID, _ID_RULE),
        "price_set_id": _optional(price_set_id, "price_set_id", _ID, _ID_RULE),
        "total_volume_before": _quantity(total_volume_before, "total_volume_before"),
        "total_amount_before": _quantity(total_amount_before, "total_amount_before"),
        "total_volume_after": _quantity(total_volume_after, "total_volume_after"),
        "total_amount_after": _quantity(total_amount_after, "total_amount_after"),
        "ended_at": _when(ended_at, "ended_at"),
    }


def alarm_data(
    alarm_id: int,
    kind: str,
    severity: Severity,
    message: str,
    *,
    raised_at: str,
    pump: int | None = None,
    nozzle: int | None = None,
    cleared_at: str | None = None,
) -> dict[str, Any]:
    """An alarm raised (cleared_at null) or cleared."""
    return {
        "alarm_id": _integer(alarm_id, "alarm_id", 1, SEQ_MAX),
        "kind": _string(kind, "kind", _CODE, _CODE_RULE),
        "severity": _choice(severity, "severity", _SEVERITIES),
        "pump": None if pump is None else _integer(pump, "pump", 1, PUMP_MAX),
        "nozzle": None if nozzle is None else _integer(nozzle, "nozzle", 1, NOZZLE_MAX),
        "message": _text(message, "message"),
        "raised_at": _when(raised_at, "raised_at"),
        "cleared_at": _when(cleared_at, "cleared_at"),
    }


TANK_MAX: Final = 99
DeliverySourceName: TypeAlias = Literal["detected", "gauge"]
_DELIVERY_SOURCES: Final[tuple[DeliverySourceName, ...]] = ("detected", "gauge")


def _signed(value: Decimal, path: str) -> str:
    """An outgoing decimal that may be negative (a temperature)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise _invalid(path, f"must be a finite Decimal, got {value!r}")
    text = decimal_text(value)
    if len(text) > _DECIMAL_MAX_CHARS:
        raise _invalid(path, f"{text[:20]}… has more than {_DECIMAL_MAX_CHARS} characters")
    return text


def inventory_data(
    tank: int,
    grade: str,
    *,
    measured_at: str,
    height_mm: Decimal,
    water_mm: Decimal,
    temperature_c: Decimal,
    product_l: Decimal,
    net_l: Decimal,
    water_l: Decimal,
    ullage_l: Decimal,
    fill_pct: Decimal,
) -> dict[str, Any]:
    """What one tank holds, as its gauge measured it (volumes in litres, net at 15 °C)."""
    return {
        "tank": _integer(tank, "tank", 1, TANK_MAX),
        "grade": _string(grade, "grade", _GRADE, _GRADE_RULE),
        "measured_at": _when(measured_at, "measured_at"),
        "height_mm": _decimal_out(height_mm, "height_mm", positive=False),
        "water_mm": _decimal_out(water_mm, "water_mm", positive=False),
        "temperature_c": _signed(temperature_c, "temperature_c"),
        "product_l": _decimal_out(product_l, "product_l", positive=False),
        "net_l": _decimal_out(net_l, "net_l", positive=False),
        "water_l": _decimal_out(water_l, "water_l", positive=False),
        "ullage_l": _signed(ullage_l, "ullage_l"),
        "fill_pct": _decimal_out(fill_pct, "fill_pct", positive=False),
    }


def delivery_data(
    delivery_id: int,
    tank: int,
    source: DeliverySourceName,
    *,
    start_at: str,
    end_at: str,
    start_volume: Decimal,
    end_volume: Decimal,
    delivered: Decimal,
    delivered_tc: Decimal,
    dispensed_during: Decimal | None,
) -> dict[str, Any]:
    """Product put into a tank; `dispensed_during` is the sales added back (null: unknown)."""
    return {
        "delivery_id": _integer(delivery_id, "delivery_id", 1, SEQ_MAX),
        "tank": _integer(tank, "tank", 1, TANK_MAX),
        "source": _choice(source, "source", _DELIVERY_SOURCES),
        "start_at": _when(start_at, "start_at"),
        "end_at": _when(end_at, "end_at"),
        "start_volume": _decimal_out(start_volume, "start_volume", positive=False),
        "end_volume": _decimal_out(end_volume, "end_volume", positive=False),
        "delivered": _signed(delivered, "delivered"),
        "delivered_tc": _signed(delivered_tc, "delivered_tc"),
        "dispensed_during": _quantity(dispensed_during, "dispensed_during"),
    }


_DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def reconciliation_data(
    tank: int,
    day: str,
    *,
    opening: Decimal,
    deliveries: Decimal,
    sales: Decimal,
    closing: Decimal,
    variance: Decimal,
    cumulative_variance: Decimal,
    limit: Decimal,
    flagged: bool,
    day_flagged: bool,
) -> dict[str, Any]:
    """One tank's wet-stock reconciliation of one local day, in litres at 15 °C."""
    _string(day, "day", _DAY, "a date YYYY-MM-DD")
    try:
        date.fromisoformat(day)
    except ValueError:
        raise _invalid("day", f"{day!r} is not a date") from None
    return {
        "tank": _integer(tank, "tank", 1, TANK_MAX),
        "day": day,
        "opening": _decimal_out(opening, "opening", positive=False),
        "deliveries": _decimal_out(deliveries, "deliveries", positive=False),
        "sales": _decimal_out(sales, "sales", positive=False),
        "closing": _decimal_out(closing, "closing", positive=False),
        "variance": _signed(variance, "variance"),
        "cumulative_variance": _signed(cumulative_variance, "cumulative_variance"),
        "limit": _decimal_out(limit, "limit", positive=False),
        "flagged": _boolean(flagged, "flagged"),
        "day_flagged": _boolean(day_flagged, "day_flagged"),
    }


def price_data(
    price_set_id: str,
    pump: int,
    status: PriceStatus,
    prices: Sequence[GradePrice],
    reason: str | None = None,
    *,
    currency: str,
) -> dict[str, Any]:
    """One dispenser's confirmation of a price set: applied, or failed with a reason code."""
    _choice(status, "status", ("applied", "failed"))
    if status == "failed" and reason is None:
        raise _invalid("reason", "a failed price change needs a reason code")
    return {
        "price_set_id": _string(price_set_id, "price_set_id", _ID, _ID_RULE),
        "pump": _integer(pump, "pump", 1, PUMP_MAX),
        "status": status,
        "currency": _string(currency, "currency", _CURRENCY, "three capital letters"),
        "prices": _grade_prices(prices),
        "reason": _optional(reason, "reason", _CODE, _CODE_RULE),
    }


def prices_data(
    price_set_id: str | None, prices: Sequence[GradePrice], *, currency: str
) -> dict[str, Any]:
    """The grade prices in force (retained). `price_set_id` is None for prices from the config."""
    return {
        "price_set_id": _optional(price_set_id, "price_set_id", _ID, _ID_RULE),
        "currency": _string(currency, "currency", _CURRENCY, "three capital letters"),
        "prices": _grade_prices(prices),
    }


def _grade_prices(prices: Sequence[GradePrice]) -> list[dict[str, str]]:
    if not prices or len(prices) > _MAX_GRADES:
        raise _invalid("prices", f"must hold 1 to {_MAX_GRADES} grade prices")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for index, price in enumerate(prices):
        path = f"prices[{index}]"
        grade = _string(price.grade, f"{path}.grade", _GRADE, _GRADE_RULE)
        if grade in seen:
            raise _invalid(path, f"grade {grade!r} appears twice")
        seen.add(grade)
        out.append(
            {
                "grade": grade,
                "unit_price": _decimal_out(price.unit_price, f"{path}.unit_price", positive=True),
            }
        )
    return out


def pump_state_data(
    pump: int,
    state: FPState,
    *,
    status: DispenserStatus | None,
    nozzle: int | None,
    nozzle_out: bool,
    grade: str | None,
    volume: Decimal | None,
    amount: Decimal | None,
    online: bool,
    order_id: str | None = None,
) -> dict[str, Any]:
    """The live state of one pump (retained): IFSF state (name and code), the dispenser's own
    status (None when offline), the nozzle in use and the running figures of the fill."""
    if not isinstance(state, FPState):
        raise _invalid("state", f"must be an FPState, got {state!r}")
    if status is not None and not isinstance(status, DispenserStatus):
        raise _invalid("status", f"must be a DispenserStatus or None, got {status!r}")
    return {
        "pump": _integer(pump, "pump", 1, PUMP_MAX),
        "state": state.name.lower(),
        "state_code": state.value,
        "status": None if status is None else status.value,
        "online": _boolean(online, "online"),
        "nozzle": None if nozzle is None else _integer(nozzle, "nozzle", 1, NOZZLE_MAX),
        "nozzle_out": _boolean(nozzle_out, "nozzle_out"),
        "grade": _optional(grade, "grade", _GRADE, _GRADE_RULE),
        "volume": _quantity(volume, "volume"),
        "amount": _quantity(amount, "amount"),
        "order_id": _optional(order_id, "order_id", _ID, _ID_RULE),
    }


def online_data(online: bool, version: str) -> dict[str, Any]:
    """The station's presence (retained); `online: false` is also the Last Will. `contract`
    tells the backend which minor version of the contract (and so which commands) it speaks."""
    return {
        "online": _boolean(online, "online"),
        "version": _string(version, "version", _ID, "a version such as 0.1.0"),
        "contract": CONTRACT_VERSION,
    }


def heartbeat_data(uptime_s: int, outbox_depth: int) -> dict[str, Any]:
    return {
        "uptime_s": _integer(uptime_s, "uptime_s", 0, SEQ_MAX),
        "outbox_depth": _integer(outbox_depth, "outbox_depth", 0, SEQ_MAX),
    }


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class GradePrice:
    grade: str
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class AuthorizeData:
    """Release a pump for a pay-at-pump order. Empty `grades` / `nozzles`: no restriction."""

    order_id: str
    pump: int
    preset_type: PresetType
    preset_value: Decimal
    currency: str
    grades: tuple[str, ...] = ()
    nozzles: tuple[int, ...] = ()
    payment_method: str | None = None
    expires_at: datetime | None = None  # nozzle-lift deadline; None: the configured timeout


@dataclass(frozen=True, slots=True)
class CancelData:
    order_id: str


@dataclass(frozen=True, slots=True)
class StopData:
    pump: int


@dataclass(frozen=True, slots=True)
class PricesData:
    price_set_id: str
    currency: str
    prices: tuple[GradePrice, ...]
    effective_at: datetime | None = None  # None: now


@dataclass(frozen=True, slots=True)
class ClearData:
    """Exactly one of the two is set."""

    order_id: str | None = None
    sale_id: int | None = None


@dataclass(frozen=True, slots=True)
class AckData:
    """The backend holds every message of `stream` up to `seq` (contract 1.1)."""

    stream: str
    seq: int


@dataclass(frozen=True, slots=True)
class ReplayData:
    """Send the messages `from_seq` to `to_seq` of `stream` again (contract 1.1)."""

    stream: str
    from_seq: int
    to_seq: int


CommandData: TypeAlias = (
    AuthorizeData | CancelData | StopData | PricesData | ClearData | AckData | ReplayData
)


@dataclass(frozen=True, slots=True)
class Command:
    """A well-formed command for this station, within its validity window; not yet known to be
    authentic (`raw` is the decoded JSON, for the signing module) nor new (that is the inbox)."""

    type: CommandType
    cmd_id: str
    station: str
    issued_at: datetime
    expires_at: datetime
    key_id: str | None
    sig: str | None
    data: CommandData
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False)


def parse_command(
    payload: bytes,
    *,
    command_type: str,
    station: str,
    now: datetime | None,
    clock_skew_s: float,
) -> Command:
    """Decode and check a command that arrived on the `cmd/{command_type}` topic.

    Raises `ContractError`; its code follows this order of checks: `invalid` (not JSON, a
    missing, unknown or ill-typed field anywhere, a schema that does not match the topic, a
    validity window that ends before it starts or lasts over `MAX_COMMAND_LIFETIME`), then
    `wrong_station`, then `check_time` (`expired` / `not_yet_valid`). So a command refused as
    wrong_station or expired is otherwise well-formed.

    With `now=None` the time is not checked: a handler that answers a known cmd_id from its
    inbox before it looks at the clock (docs/mqtt.md, "the checks come in this order") parses,
    verifies the signature, consults the inbox, then calls `check_time` itself.
    """
    raw = _decode(payload)
    cmd_id = _cmd_id_of(raw)
    try:
        command = _command(raw, command_type)
    except ContractError as error:
        error.cmd_id = cmd_id
        raise
    if command.station != station:
        raise ContractError(
            f"the command is for station {command.station!r}, this is {station!r}",
            code="wrong_station",
            cmd_id=cmd_id,
        )
    if now is not None:
        check_time(command, now=now, clock_skew_s=clock_skew_s)
    return command


def check_time(command: Command, *, now: datetime, clock_skew_s: float) -> None:
    """Refuse a command outside its validity window (or an order whose own `expires_at` has
    passed), allowing `clock_skew_s` between the cloud's clock and ours."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not 0 <= clock_skew_s <= _MAX_SKEW_S:  # NaN included
        raise ValueError(f"clock_skew_s must be 0 to {_MAX_SKEW_S:.0f} s, not {clock_skew_s}")
    skew = timedelta(seconds=clock_skew_s)
    # Differences, not sums: a command valid until 9999-12-31 plus the skew is past what a
    # datetime holds (OverflowError), and two datetimes always have a difference.
    if now - command.expires_at > skew:
        raise ContractError(
            f"the command expired at {timestamp(command.expires_at)}",
            code="expired",
            cmd_id=command.cmd_id,
        )
    if command.issued_at - now > skew:
        raise ContractError(
            f"the command is issued at {timestamp(command.issued_at)}, in the future",
            code="not_yet_valid",
            cmd_id=command.cmd_id,
        )
    data = command.data
    order_deadline = data.expires_at if isinstance(data, AuthorizeData) else None
    if order_deadline is not None and now - order_deadline > skew:
        raise ContractError(
            f"the order's expires_at ({timestamp(order_deadline)}) has passed",
            code="expired",
            cmd_id=command.cmd_id,
        )


def command_envelope(
    data: CommandData,
    *,
    cmd_id: str,
    station: str,
    issued_at: datetime,
    expires_at: datetime,
    key_id: str | None = None,
) -> dict[str, Any]:
    """The unsigned JSON object of a command, as the cloud (or `edgectl cloud`) sends it; the
    signing module adds `sig`. `parse_command` gives back the same values."""
    command_type, wire = _command_wire(data)
    message: dict[str, Any] = {
        "schema": f"edgectl/{SCHEMA_VERSION}/cmd/{command_type}",
        "cmd_id": _string(cmd_id, "cmd_id", _ID, _ID_RULE),
        "station": _string(station, "station", _STATION, "a station id"),
        "issued_at": timestamp(issued_at),
        "expires_at": timestamp(expires_at),
        "data": wire,
    }
    if key_id is not None:
        message["key_id"] = _string(key_id, "key_id", _ID, _ID_RULE)
    return message


def _command_wire(data: CommandData) -> tuple[CommandType, dict[str, Any]]:
    if isinstance(data, AuthorizeData):
        wire: dict[str, Any] = {
            "order_id": data.order_id,
            "pump": data.pump,
            "preset": {"type": data.preset_type, "value": decimal_text(data.preset_value)},
            "currency": data.currency,
        }
        if data.grades:
            wire["grades"] = list(data.grades)
        if data.nozzles:
            wire["nozzles"] = list(data.nozzles)
        if data.payment_method is not None:
            wire["payment_method"] = data.payment_method
        if data.expires_at is not None:
            wire["expires_at"] = timestamp(data.expires_at)
        return "authorize", wire
    if isinstance(data, CancelData):
        return "cancel", {"order_id": data.order_id}
    if isinstance(data, StopData):
        return "stop", {"pump": data.pump}
    if isinstance(data, PricesData):
        wire = {"price_set_id": data.price_set_id, "currency": data.currency}
        if data.effective_at is not None:
            wire["effective_at"] = timestamp(data.effective_at)
        wire["prices"] = [
            {"grade": p.grade, "unit_price": decimal_text(p.unit_price)} for p in data.prices
        ]
        return "prices", wire
    if isinstance(data, AckData):
        return "ack", {"stream": data.stream, "seq": data.seq}
    if isinstance(data, ReplayData):
        return "replay", {"stream": data.stream, "from_seq": data.from_seq, "to_seq": data.to_seq}
    if data.order_id is not None:
        return "clear", {"order_id": data.order_id}
    return "clear", {"sale_id": data.sale_id}


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The same key twice could be read one way by the signer and another way here.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(payload: bytes) -> Any:
    if len(payload) > MAX_COMMAND_BYTES:
        raise _invalid("payload", f"{len(payload)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        return json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_refuse_constant,
        )
    except _DuplicateKey as error:
        raise _invalid("payload", f"the key {error} appears twice in one object") from None
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError too
        raise _invalid("payload", f"not UTF-8 JSON ({error})") from None


def _cmd_id_of(raw: object) -> str | None:
    if isinstance(raw, dict):
        cmd_id = raw.get("cmd_id")
        if isinstance(cmd_id, str) and _ID.fullmatch(cmd_id):
            return cmd_id
    return None


def _fields(
    value: object, path: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(path, "must be a JSON object")
    unknown = value.keys() - required - optional
    if unknown:
        names = ", ".join(_show(name) for name in sorted(unknown)[:3])
        raise _invalid(path, f"unknown field(s) {names}{', …' if len(unknown) > 3 else ''}")
    missing = required - value.keys()
    if missing:
        raise _invalid(path, f"missing field(s) {', '.join(sorted(missing))}")
    return value


_TOP_REQUIRED: Final = frozenset({"schema", "cmd_id", "station", "issued_at", "expires_at", "data"})
_TOP_OPTIONAL: Final = frozenset({"key_id", "sig"})
_SIG_MAX_CHARS: Final = 512


def _command(raw: object, command_type: str) -> Command:
    known_type = _choice(command_type, "topic: command type", COMMAND_TYPES)
    top = _fields(raw, "command", _TOP_REQUIRED, _TOP_OPTIONAL)
    _check_schema(top["schema"], command_type)
    cmd_id = _string(top["cmd_id"], "cmd_id", _ID, _ID_RULE)
    station = _string(top["station"], "station", _STATION, "a station id")
    issued_at = parse_timestamp(top["issued_at"], "issued_at")
    expires_at = parse_timestamp(top["expires_at"], "expires_at")
    _check_window(issued_at, expires_at, "expires_at")
    key_id = None
    if "key_id" in top:
        key_id = _string(top["key_id"], "key_id", _ID, _ID_RULE)
    sig = None
    if "sig" in top:
        sig = _text(top["sig"], "sig", _SIG_MAX_CHARS)
        if not sig:
            raise _invalid("sig", "must not be empty")
    parse_data = _DATA_PARSERS[command_type]
    return Command(
        type=known_type,
        cmd_id=cmd_id,
        station=station,
        issued_at=issued_at,
        expires_at=expires_at,
        key_id=key_id,
        sig=sig,
        data=parse_data(top["data"], issued_at),
        raw=top,
    )


def _check_schema(schema: object, command_type: str) -> None:
    expected = f"edgectl/{SCHEMA_VERSION}/cmd/{command_type}"
    if schema == expected:
        return
    if isinstance(schema, str) and schema.startswith(f"edgectl/{SCHEMA_VERSION}/cmd/"):
        raise _invalid("schema", f"{_show(schema)} arrived on the cmd/{command_type} topic")
    if isinstance(schema, str) and schema.startswith("edgectl/"):
        raise _invalid("schema", f"{_show(schema)} is not a version this station understands")
    raise _invalid("schema", f"must be {expected!r}")


def _check_window(issued_at: datetime, until: datetime, path: str) -> None:
    if until <= issued_at:
        raise _invalid(path, "must be after issued_at")
    if until - issued_at > MAX_COMMAND_LIFETIME:
        raise _invalid(path, f"must be at most {MAX_COMMAND_LIFETIME} after issued_at")


def _positive(value: object, path: str) -> Decimal:
    number = parse_decimal(value, path)
    if not number > 0:
        raise _invalid(path, "must be greater than 0")
    return number


def _array(value: object, path: str, max_items: int) -> list[Any]:
    if not isinstance(value, list) or not 1 <= len(value) <= max_items:
        raise _invalid(path, f"must be an array of 1 to {max_items} items")
    return value


def _unique(items: tuple[Any, ...], path: str) -> None:
    if len(set(items)) != len(items):
        raise _invalid(path, "must not name the same item twice")


def _authorize(value: object, issued_at: datetime) -> AuthorizeData:
    data = _fields(
        value,
        "data",
        frozenset({"order_id", "pump", "preset", "currency"}),
        frozenset({"grades", "nozzles", "payment_method", "expires_at"}),
    )
    preset = _fields(data["preset"], "data.preset", frozenset({"type", "value"}))
    grades: tuple[str, ...] = ()
    if "grades" in data:
        grades = tuple(
            _string(item, f"data.grades[{i}]", _GRADE, _GRADE_RULE)
            for i, item in enumerate(_array(data["grades"], "data.grades", _MAX_GRADES))
        )
        _unique(grades, "data.grades")
    nozzles: tuple[int, ...] = ()
    if "nozzles" in data:
        nozzles = tuple(
            _integer(item, f"data.nozzles[{i}]", 1, NOZZLE_MAX)
            for i, item in enumerate(_array(data["nozzles"], "data.nozzles", NOZZLE_MAX))
        )
        _unique(nozzles, "data.nozzles")
    payment_method = None
    if "payment_method" in data:
        payment_method = _string(data["payment_method"], "data.payment_method", _ID, _ID_RULE)
    expires_at = None
    if "expires_at" in data:
        expires_at = parse_timestamp(data["expires_at"], "data.expires_at")
        _check_window(issued_at, expires_at, "data.expires_at")
    return AuthorizeData(
        order_id=_string(data["order_id"], "data.order_id", _ID, _ID_RULE),
        pump=_integer(data["pump"], "data.pump", 1, PUMP_MAX),
        preset_type=_choice(preset["type"], "data.preset.type", _PRESET_TYPES),
        preset_value=_positive(preset["value"], "data.preset.value"),
        currency=_string(data["currency"], "data.currency", _CURRENCY, "three capital letters"),
        grades=grades,
        nozzles=nozzles,
        payment_method=payment_method,
        expires_at=expires_at,
    )


def _cancel(value: object, issued_at: datetime) -> CancelData:
    data = _fields(value, "data", frozenset({"order_id"}))
    return CancelData(order_id=_string(data["order_id"], "data.order_id", _ID, _ID_RULE))


def _stop(value: object, issued_at: datetime) -> StopData:
    data = _fields(value, "data", frozenset({"pump"}))
    return StopData(pump=_integer(data["pump"], "data.pump", 1, PUMP_MAX))


def _prices(value: object, issued_at: datetime) -> PricesData:
    data = _fields(
        value,
        "data",
        frozenset({"price_set_id", "currency", "prices"}),
        frozenset({"effective_at"}),
    )
    prices: list[GradePrice] = []
    for i, item in enumerate(_array(data["prices"], "data.prices", _MAX_GRADES)):
        path = f"data.prices[{i}]"
        entry = _fields(item, path, frozenset({"grade", "unit_price"}))
        grade = _string(entry["grade"], f"{path}.grade", _GRADE, _GRADE_RULE)
        if any(price.grade == grade for price in prices):
            raise _invalid(path, f"grade {grade!r} appears twice")
        prices.append(GradePrice(grade, _positive(entry["unit_price"], f"{path}.unit_price")))
    effective_at = None
    if "effective_at" in data:
        effective_at = parse_timestamp(data["effective_at"], "data.effective_at")
    return PricesData(
        price_set_id=_string(data["price_set_id"], "data.price_set_id", _ID, _ID_RULE),
        currency=_string(data["currency"], "data.currency", _CURRENCY, "three capital letters"),
        prices=tuple(prices),
        effective_at=effective_at,
    )


def _clear(value: object, issued_at: datetime) -> ClearData:
    data = _fields(value, "data", frozenset(), frozenset({"order_id", "sale_id"}))
    if len(data) != 1:
        raise _invalid("data", "must name exactly one of order_id and sale_id")
    if "order_id" in data:
        return ClearData(order_id=_string(data["order_id"], "data.order_id", _ID, _ID_RULE))
    return ClearData(sale_id=_integer(data["sale_id"], "data.sale_id", 1, SEQ_MAX))


def _ack(value: object, issued_at: datetime) -> AckData:
    data = _fields(value, "data", frozenset({"stream", "seq"}))
    return AckData(
        stream=_choice(data["stream"], "data.stream", GUARANTEED_STREAMS),
        seq=_integer(data["seq"], "data.seq", 0, SEQ_MAX),
    )


def _replay(value: object, issued_at: datetime) -> ReplayData:
    data = _fields(value, "data", frozenset({"stream", "from_seq", "to_seq"}))
    from_seq = _integer(data["from_seq"], "data.from_seq", 1, SEQ_MAX)
    to_seq = _integer(data["to_seq"], "data.to_seq", 1, SEQ_MAX)
    if to_seq < from_seq:
        raise _invalid("data.to_seq", "must not be less than from_seq")
    return ReplayData(
        stream=_choice(data["stream"], "data.stream", GUARANTEED_STREAMS),
        from_seq=from_seq,
        to_seq=to_seq,
    )


_DATA_PARSERS: Final[Mapping[str, Callable[[object, datetime], CommandData]]] = MappingProxyType(
    {
        "authorize": _authorize,
        "cancel": _cancel,
        "stop": _stop,
        "prices": _prices,
        "clear": _clear,
        "ack": _ack,
        "replay": _replay,
    }
)
