"""The control socket's wire format: one JSON object per line each way, and its argument rules.

A request is ``{"id": 1, "op": "pumps", "args": {}}``. Its answer carries the same id:
``{"id": 1, "ok": true, "result": …}`` or ``{"id": 1, "ok": false, "error": {"code", "message"}}``.
A streaming op (`watch`, `sniff`) is answered once like that, then sends
``{"id": 1, "event": {…}}`` lines until the client hangs up; when the daemon ends the stream
itself (it is stopping) a last ``{"id": 1, "end": "reason"}`` says why.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from edgectl.errors import EdgectlError

PROTOCOL_VERSION: Final = 1
MAX_LINE: Final = 64 * 1024  # a request longer than this is refused

READ_OPS: Final = (
    "status",
    "pumps",
    "tanks",
    "prices",
    "alarms",
    "sales",
    "orders",
    "outbox",
    "audit",
    "health",
    "history",
    "metrics",
    "deliveries",
    "reconciliations",
    "totals",
    "shifts",
)
ACTION_OPS: Final = ("authorize", "stop", "price", "close", "open", "shift_open", "shift_close")
STREAM_OPS: Final = ("watch", "sniff")
OPS: Final = READ_OPS + ACTION_OPS + STREAM_OPS

# Error codes of the protocol itself; refusals by the station carry the station's own codes
# (pump_busy, pump_offline, unknown_pump, preset_out_of_limits…).
BAD_REQUEST: Final = "bad_request"
UNKNOWN_OP: Final = "unknown_op"
INVALID_ARGS: Final = "invalid_args"
BUSY: Final = "busy"
TIMEOUT: Final = "timeout"
INTERNAL: Final = "internal"

RequestId = int | str | None


class ProtocolError(EdgectlError):
    """A request the server cannot take as it is; `request_id` answers it when known."""

    code = BAD_REQUEST

    def __init__(self, message: str, *, code: str = BAD_REQUEST, request_id: RequestId = None):
        super().__init__(message, code=code)
        self.request_id = request_id


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    op: str
    args: Mapping[str, Any]


# --------------------------------------------------------------------------- encoding


def to_jsonable(value: Any) -> Any:
    """Values as they travel: Decimals as strings (money is never a float), enums by value,
    times in ISO 8601, dataclasses as objects."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex(" ").upper()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return str(value)


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(to_jsonable(message), separators=(",", ":")).encode() + b"\n"


def encode_request(request_id: RequestId, op: str, args: Mapping[str, Any]) -> bytes:
    return _line({"id": request_id, "op": op, "args": dict(args)})


def ok(request_id: RequestId, result: Any) -> bytes:
    return _line({"id": request_id, "ok": True, "result": result})


def error(request_id: RequestId, code: str, message: str) -> bytes:
    return _line({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def event(request_id: RequestId, data: Any) -> bytes:
    return _line({"id": request_id, "event": data})


def end(request_id: RequestId, reason: str) -> bytes:
    return _line({"id": request_id, "end": reason})


# --------------------------------------------------------------------------- decoding


def parse_request(line: bytes) -> Request:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"a request is one JSON object per line: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a request is a JSON object")
    request_id = message.get("id")
    if not (request_id is None or isinstance(request_id, int | str)) or isinstance(
        request_id, bool
    ):
        raise ProtocolError("id must be a number or a string")
    op = message.get("op")
    if not isinstance(op, str):
        raise ProtocolError('"op" is missing', request_id=request_id)
    if op not in OPS:
        raise ProtocolError(
            f"unknown op {op!r} (known: {', '.join(OPS)})", code=UNKNOWN_OP, request_id=request_id
        )
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError('"args" must be an object', code=INVALID_ARGS, request_id=request_id)
    return Request(request_id, op, args)


def parse_reply(line: bytes) -> dict[str, Any]:
    """A line from the server (client side)."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the daemon sent a line that is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("the daemon sent a line that is not a JSON object")
    return message


# --------------------------------------------------------------------------- arguments


class Args:
    """Typed reads of a request's arguments; a bad one raises `ProtocolError(invalid_args)`."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        self.raw = args

    def _fail(self, key: str, message: str) -> ProtocolError:
        return ProtocolError(f"{key}: {message}", code=INVALID_ARGS)

    def req_int(self, key: str, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self.opt_int(key, lo=lo, hi=hi)
        if value is None:
            raise self._fail(key, "missing")
        return value

    def opt_int(self, key: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise self._fail(key, f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"{value!r} is not a whole number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self._fail(key, f"{value} is outside {lo}..{hi}")
        return value

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"{value!r} is not a number")
        if not lo <= value <= hi:
            raise self._fail(key, f"{value} is outside {lo:g}..{hi:g}")
        return float(value)

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if value is None:
            raise self._fail(key, "missing")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, f"{value!r} is not a text")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"{value!r} is not true or false")
        return value

    def opt_decimal(self, key: str) -> Decimal | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self._fail(key, f"{value!r} is not a decimal number (send it as a string)")
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise self._fail(key, f"{value!r} is not a decimal number") from None
        if not number.is_finite():
            raise self._fail(key, f"{value!r} is not a decimal number")
        return number

    def int_list(self, key: str) -> tuple[int, ...]:
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self._fail(key, f"{value!r} is not a list of whole numbers")
        return tuple(value)
