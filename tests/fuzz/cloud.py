"""Fuzz entries of the cloud command parser: MQTT command payloads, signatures, their values.

What a station does with an incoming command, up to the point where it acts: parse it
(contract.parse_command), check its signature (signing.verify_command), its validity window
(contract.check_time), and answer a refusal (contract.rejection_data / result_data, then
contract.encode). Each may refuse with its typed error; nothing may raise anything else.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from edgectl.cloud import contract, signing
from edgectl.cloud.contract import (
    AckData,
    AuthorizeData,
    CancelData,
    ClearData,
    ContractError,
    GradePrice,
    PricesData,
    ReplayData,
    StopData,
    Topics,
)
from edgectl.cloud.signing import SignatureError
from tests.fuzz.targets import (
    TRICKY_DIGITS,
    Entry,
    Refused,
    Target,
    attempt,
    edge_integers,
    json_values,
    mutated,
    nested,
    repeated,
    texts,
)

STATION = "SH-PD-0017"
KEY_ID = "cloud-fuzz"
SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a fixed key: replayable
KEYS = {
    KEY_ID: SIGNER.public_key(),
    "other": Ed25519PrivateKey.from_private_bytes(b"\1" * 32).public_key(),
}
ISSUED = datetime(2026, 11, 24, 10, 20, tzinfo=UTC)
# Clocks a station may have: None (the handler parses first and checks the time later), the
# command's own window, and the ends of what a datetime can hold.
NOWS: tuple[datetime | None, ...] = (
    None,
    ISSUED + timedelta(seconds=30),
    datetime.min.replace(tzinfo=UTC),
    datetime.max.replace(tzinfo=UTC),
    datetime(2026, 11, 24, 10, 20, tzinfo=UTC) - timedelta(days=3),
)
TS = "2026-11-24T10:21:07.412Z"
_TOPICS = Topics("edgectl", STATION)

# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
_DATA: dict[str, dict[str, Any]] = {
    "authorize": {
        "order_id": "o-88812",
        "pump": 3,
        "preset": {"type": "amount", "value": "200.00"},
        "currency": "CNY",
        "grades": ["95"],
        "nozzles": [2],
        "payment_method": "wechat",
        "expires_at": "2026-11-24T10:25:00.000Z",
    },
    "cancel": {"order_id": "o-88812"},
    "stop": {"pump": 3},
    "prices": {
        "price_set_id": "ps-2026-11-20",
        "currency": "CNY",
        "effective_at": "2026-11-25T00:00:00.000Z",
        "prices": [{"grade": "92", "unit_price": "7.12"}, {"grade": "95", "unit_price": "7.58"}],
    },
    "clear": {"sale_id": 412},
    # Contract 1.1: the backend's watermark, and a range it asks for again.
    "ack": {"stream": "sale", "seq": 41},
    "replay": {"stream": "order", "from_seq": 7, "to_seq": 12},
}
# The command type of the topic: mostly the one the document's schema names ("same").
_TYPES = st.one_of(
    st.just("same"),
    st.just("same"),
    st.sampled_from(contract.COMMAND_TYPES),
    st.sampled_from(["", "x", "stop "]),
)
_stamp_texts = st.one_of(
    st.sampled_from(
        [
            "2026-11-24T10:20:00.000Z",
            "2026-11-24T10:20:00Z",
            "9999-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-24T10:20:00.000+00:00",
            "2026-11-24T10:2٣:00Z",
        ]
    ),
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)).map(
        lambda at: at.isoformat(timespec="milliseconds") + "Z"
    ),
)
_tricky_values = st.one_of(
    json_values,
    _stamp_texts,
    edge_integers,
    st.sampled_from(
        [
            1e400,
            -0.0,
            3.0,
            True,
            "³",
            "٣",
            "１",
            "1e3",
            "-0",
            "0.000",
            "9" * 40,
            "\ud800",
            "\x00",
            "9\udfff",
            "\ud83d\ude00",
            "⛽",
            "\u2028",
        ]
    ),
    st.text("0123456789.-" + TRICKY_DIGITS, max_size=12),
)


_ODD_CHARACTERS = ["\ud800", "\udfff", "\x00", "\x7f", "³", "٣", "１", " ", "\n", "⛽", "\u2028"]
# Validity windows: an ordinary one, and the first and last day a datetime can hold.
_WINDOWS = (
    ("2026-11-24T10:20:00.000Z", "2026-11-24T10:30:00.000Z"),
    ("9999-12-31T00:00:00.000Z", "9999-12-31T23:59:59.999999Z"),
    ("0001-01-01T00:00:00.000Z", "0001-01-01T00:01:00.000Z"),
)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a member of a JSON document, nested ones included."""
    places = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, member in items:
        places.append((*path, key))
        if isinstance(member, dict | list):
            places += _places(member, (*path, key))
    return places


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A command that parses, then a few of its members, at any depth, changed, removed or
    added; sometimes signed after that, so the parser's refusal is the only one left."""
    command_type = draw(st.sampled_from(sorted(_DATA)))
    issued, expires = draw(st.sampled_from(_WINDOWS))
    doc: dict[str, Any] = {
        "schema": f"edgectl/v1/cmd/{command_type}",
        "cmd_id": "c-20261124-000123",
        "station": STATION,
        "issued_at": issued,
        "expires_at": expires,
        "key_id": KEY_ID,
        "data": json.loads(json.dumps(_DATA[command_type])),
    }
    if issued.startswith("9999") and command_type == "authorize":
        doc["data"]["expires_at"] = expires
    for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2, 3)))):
        *parents, key = draw(st.sampled_from(_places(doc)))
        table: Any = doc
        for step in parents:
            table = table[step]
        member = table[key]
        choice = draw(st.integers(0, 4))
        if choice == 0:
            del table[key]
        elif choice <= 2 and isinstance(member, str):  # near the original: one odd character
            at = draw(st.integers(0, len(member)))
            table[key] = member[:at] + draw(st.sampled_from(_ODD_CHARACTERS)) + member[at:]
        else:
            table[key] = draw(_tricky_values)
        if isinstance(table, dict) and draw(st.integers(0, 4)) == 0:
            table[draw(texts(max_size=6))] = draw(_tricky_values)
    if draw(st.booleans()):
        wire = _wire(doc, True)
        if wire is not None and b"\\ud" not in wire:
            doc = signing.sign_command(doc, SIGNER, KEY_ID)
    return doc


_raw_payloads = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            nested(100_000).encode(),
            nested(2_000).encode(),
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
            b"1" * 5000,
            b'{"cmd_id": "a", "cmd_id": "b"}',
            b'{"pump": NaN, "x": Infinity, "y": -Infinity}',
            b"\xef\xbb\xbf{}",
            b'"\\ud800"',
            b" " * (contract.MAX_COMMAND_BYTES + 1),
        ]
    ),
    documents()
    .map(lambda doc: _wire(doc, True) or b"")
    .flatmap(
        lambda wire: mutated(wire, st.sampled_from([b"\\ud800", b"\xff", b"[", b"}", b"NaN"]))
    ),
)
# (document or bytes, escape non-ASCII?, topic's command type, which clock, clock skew)
commands = st.tuples(
    st.one_of(documents(), _raw_payloads),
    st.booleans(),
    _TYPES,
    st.integers(0, len(NOWS) - 1),
    st.sampled_from([0.0, 30.0, 3600.0]),
)

_ids = st.one_of(
    st.sampled_from(["o-1", "c-1", "x" * 128]), st.text("abc-_!~", min_size=1, max_size=8)
)
_decimals = st.one_of(
    st.integers(1, 10**6).map(lambda n: Decimal(n).scaleb(-2)),
    st.sampled_from([Decimal("0.001"), Decimal("9" * 31), Decimal("1E+3"), Decimal("-1")]),
)
_grades = st.one_of(st.sampled_from(["92", "95", "DIESEL", "柴油"]), texts(max_size=5))
_streams = st.one_of(
    st.sampled_from(contract.GUARANTEED_STREAMS),
    st.sampled_from(["pump_state", "heartbeat", "Sale", ""]),
    texts(max_size=8),
)
_ms_times = st.integers(1, 24 * 3600 * 1000).map(lambda ms: ISSUED + timedelta(milliseconds=ms))
command_data = st.one_of(
    st.tuples(
        st.just("authorize"),
        _ids,
        st.integers(0, 100),
        st.sampled_from(["amount", "volume", "litres"]),
        _decimals,
        st.sampled_from(["CNY", "EUR", "eur"]),
        st.lists(_grades, max_size=3),
        st.lists(st.integers(0, 16), max_size=3),
        st.one_of(st.none(), _ids),
        st.one_of(st.none(), _ms_times),
    ),
    st.tuples(st.just("cancel"), _ids),
    st.tuples(st.just("stop"), st.integers(0, 100)),
    st.tuples(
        st.just("prices"),
        _ids,
        st.sampled_from(["CNY", "EUR"]),
        st.lists(st.tuples(_grades, _decimals), max_size=3),
        st.one_of(st.none(), _ms_times),
    ),
    st.tuples(st.just("clear"), st.one_of(_ids, st.integers(-1, 2**63))),
    st.tuples(st.just("ack"), _streams, edge_integers),
    st.tuples(st.just("replay"), _streams, edge_integers, edge_integers),
)
# (data, lifetime in ms, tamper with: None or a member and a new value)
signed = st.tuples(
    command_data,
    st.integers(1, 25 * 3600 * 1000),
    st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["cmd_id", "station", "issued_at", "key_id", "data"]), _tricky_values
        ),
    ),
)


def _deep(depth: int) -> list[Any]:
    nest: list[Any] = []
    for _ in range(depth):
        nest = [nest]
    return nest


signatures = st.tuples(
    st.one_of(
        st.dictionaries(texts(max_size=8), json_values, max_size=6),
        documents(),
        st.sampled_from([100, 2_000]).map(lambda depth: {"data": _deep(depth)}),
    ),
    st.one_of(
        st.sampled_from([KEY_ID, "other", "unknown", ""]),
        json_values,
    ),
    st.one_of(
        st.sampled_from(["", "AAAA", "=" * 88, "A" * 86 + "==", "A" * 88, "\u00e9" * 86 + "=="]),
        json_values,
    ),
)
values = st.one_of(
    st.tuples(st.just("decimal"), _tricky_values),
    st.tuples(st.just("timestamp"), st.one_of(_stamp_texts, _tricky_values)),
    st.tuples(
        st.just("topic"),
        st.one_of(
            st.sampled_from([f"edgectl/v1/{STATION}/cmd/stop", f"edgectl/v1/{STATION}/cmd/"]),
            texts(max_size=60),
        ),
    ),
)


# Payloads up to the size limit: one token repeated, or a command with one huge member.
big_commands = st.tuples(
    st.one_of(
        repeated(st.sampled_from([b"[", b'{"a":', b" ", b"1", b'"x', b"\\ud800", b'{"":[],'])),
        st.tuples(st.sampled_from(sorted(_DATA)), st.integers(1, contract.MAX_COMMAND_BYTES)).map(
            lambda pair: json.dumps(
                {"schema": f"edgectl/v1/cmd/{pair[0]}", "cmd_id": "x" * pair[1], "data": {}}
            ).encode()
        ),
    ),
    st.just(True),
    st.just("same"),
    st.just(1),
    st.just(30.0),
)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
def _wire(document: Any, ascii_only: bool) -> bytes | None:
    """The payload of a document as a sender's JSON encoder writes it (NaN included)."""
    if isinstance(document, bytes):
        return document
    try:
        text = json.dumps(document, ensure_ascii=ascii_only)
    except (ValueError, TypeError, RecursionError):
        return None  # not JSON any encoder would write
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


def _answer(result: dict[str, Any]) -> None:
    """A result goes out in an envelope, as UTF-8 JSON: it must always be encodable."""
    contract.encode(contract.envelope("result", STATION, 1, TS, result))


def check_command(case: tuple[Any, bool, str, int, float]) -> None:
    """An incoming command is parsed, verified and time-checked with typed refusals only,
    and every refusal can be answered."""
    document, ascii_only, command_type, which, skew = case
    if command_type == "same":
        schema = document.get("schema") if isinstance(document, dict) else None
        command_type = schema.rsplit("/", 1)[-1] if isinstance(schema, str) else "stop"
    payload = _wire(document, ascii_only)
    if payload is None or not (math.isfinite(skew) and 0 <= skew <= 3600):  # config's range
        return
    now = NOWS[which % len(NOWS)]
    try:
        command = contract.parse_command(
            payload, command_type=command_type, station=STATION, now=now, clock_skew_s=skew
        )
    except ContractError as error:
        _answer(contract.rejection_data(error, command_type))
        return
    assert command.type == command_type and command.station == STATION
    key_id = attempt(SignatureError, signing.verify_command, command.raw, KEYS)
    if isinstance(key_id, Refused):
        error = key_id.error
        assert isinstance(error, SignatureError)
        _answer(
            contract.result_data(command.cmd_id, command.type, "rejected", error.code, str(error))
        )
    _rebuilds(command, skew)
    for moment in NOWS[1:]:
        refused = attempt(
            ContractError, contract.check_time, command, now=moment, clock_skew_s=skew
        )
        if isinstance(refused, Refused):
            assert isinstance(refused.error, ContractError)
            _answer(contract.rejection_data(refused.error, command_type))


def _rebuilds(command: contract.Command, skew: float) -> None:
    """What the parser accepted, the builder writes back out, to bytes that parse the same
    (when its times are whole milliseconds, the contract's own precision)."""
    data = command.data
    times = [command.issued_at, command.expires_at]
    times += [
        getattr(data, name)
        for name in ("expires_at", "effective_at")
        if getattr(data, name, None) is not None
    ]
    message = contract.command_envelope(
        data,
        cmd_id=command.cmd_id,
        station=command.station,
        issued_at=command.issued_at,
        expires_at=command.expires_at,
        key_id=command.key_id,
    )
    wire = contract.encode(message)
    if all(moment.microsecond % 1000 == 0 for moment in times):
        again = contract.parse_command(
            wire, command_type=command.type, station=STATION, now=None, clock_skew_s=skew
        )
        assert again.data == data


def _build(spec: tuple[Any, ...]) -> contract.CommandData | None:
    match spec:
        case ("authorize", order_id, pump, preset, value, currency, grades, nozzles, method, at):
            return AuthorizeData(
                order_id, pump, preset, value, currency, tuple(grades), tuple(nozzles), method, at
            )
        case ("cancel", order_id):
            return CancelData(order_id)
        case ("stop", pump):
            return StopData(pump)
        case ("prices", price_set, currency, prices, at):
            return PricesData(
                price_set, currency, tuple(GradePrice(grade, price) for grade, price in prices), at
            )
        case ("clear", str() as order_id):
            return ClearData(order_id=order_id)
        case ("clear", int() as sale_id):
            return ClearData(sale_id=sale_id)
        case ("ack", stream, seq):
            return AckData(stream, seq)
        case ("replay", stream, from_seq, to_seq):
            return ReplayData(stream, from_seq, to_seq)
    return None


def _canonical(message: dict[str, Any]) -> bytes | None:
    try:
        return signing.canonical_json({k: v for k, v in message.items() if k != "sig"})
    except (ValueError, TypeError, RecursionError):
        return None


def check_signed(case: tuple[tuple[Any, ...], int, tuple[str, Any] | None]) -> None:
    """A command the cloud builds and signs parses to the same data and verifies; changed
    after signing, it no longer verifies."""
    spec, lifetime_ms, tamper = case
    data = _build(spec)
    if data is None or not 0 < lifetime_ms <= 10**12:
        return
    expires = attempt(OverflowError, lambda: ISSUED + timedelta(milliseconds=lifetime_ms))
    if isinstance(expires, Refused):
        return
    message = attempt(
        (ContractError, TypeError, AttributeError),  # the builder checks only what it writes
        contract.command_envelope,
        data,
        cmd_id="c-1",
        station=STATION,
        issued_at=ISSUED,
        expires_at=expires,
        key_id=KEY_ID,
    )
    if isinstance(message, Refused):
        return
    # What JSON cannot carry (a lone surrogate, an int of 5000 digits) the signer cannot sign.
    signed_message = attempt(ValueError, signing.sign_command, message, SIGNER, KEY_ID)
    if isinstance(signed_message, Refused):
        return
    original = _canonical(signed_message)
    if tamper is not None:
        signed_message = {**signed_message, tamper[0]: tamper[1]}
    payload = _wire(signed_message, False)
    if payload is None:
        return
    command = attempt(
        ContractError,
        contract.parse_command,
        payload,
        command_type=spec[0],
        station=STATION,
        now=None,
        clock_skew_s=30,
    )
    if isinstance(command, Refused):
        return
    at = getattr(data, "expires_at", None) or getattr(data, "effective_at", None)
    if tamper is None and (at is None or at.microsecond % 1000 == 0):  # the contract's ms
        assert command.data == data
    key_id = attempt(SignatureError, signing.verify_command, command.raw, KEYS)
    if _canonical(command.raw) == original:
        assert key_id == KEY_ID, key_id
    else:
        assert isinstance(key_id, Refused), "a changed command verified"


def check_signature(case: tuple[dict[str, Any], Any, Any]) -> None:
    """verify_command raises only SignatureError, whatever the message holds."""
    message, key_id, sig = case
    message = {**message, "key_id": key_id, "sig": sig}
    result = attempt(SignatureError, signing.verify_command, message, KEYS)
    assert isinstance(result, Refused) or result in KEYS


def check_values(case: tuple[str, Any]) -> None:
    match case:
        case ("decimal", value):
            number = attempt(ContractError, contract.parse_decimal, value, "x")
            if not isinstance(number, Refused):  # written back in a form read the same
                assert contract.parse_decimal(contract.decimal_text(number), "x") == number
        case ("timestamp", value):
            attempt(ContractError, contract.parse_timestamp, value, "x")
        case ("topic", str() as topic):
            command_type = _TOPICS.parse_command_topic(topic)
            assert command_type is None or "/" not in command_type


def _with_grade(grade: str) -> dict[str, Any]:
    doc = {
        "schema": "edgectl/v1/cmd/prices",
        "cmd_id": "c-1",
        "station": STATION,
        "issued_at": _WINDOWS[0][0],
        "expires_at": _WINDOWS[0][1],
        "data": json.loads(json.dumps(_DATA["prices"])),
    }
    doc["data"]["prices"][0]["grade"] = grade
    return doc


def _valid_documents() -> list[dict[str, Any]]:
    documents = []
    for command_type, data in _DATA.items():
        for issued, expires in _WINDOWS[:2]:
            doc = {
                "schema": f"edgectl/v1/cmd/{command_type}",
                "cmd_id": "c-20261124-000123",
                "station": STATION,
                "issued_at": issued,
                "expires_at": expires,
                "key_id": KEY_ID,
                "data": json.loads(json.dumps(data)),
            }
            if command_type == "authorize":
                doc["data"]["expires_at"] = expires
            documents += [doc, signing.sign_command(doc, SIGNER, KEY_ID)]
    return documents


TARGET = Target(
    "cloud",
    (
        Entry(
            "commands",
            commands,
            check_command,
            weight=6,
            seeds=[(doc, True, "same", 1, 30.0) for doc in _valid_documents()],
            examples=[
                # check_time: expires_at + skew past datetime.max raised OverflowError
                (_valid_documents()[2], True, "same", 1, 30.0),
                # a grade "\ud800" was accepted, and contract.encode then raised
                (_with_grade("\ud800"), True, "same", 0, 30.0),
            ],
        ),
        Entry("signed", signed, check_signed, weight=2),
        Entry("big", big_commands, check_command, big=100),
        Entry(
            "signatures",
            signatures,
            check_signature,
            # canonical_json raised RecursionError through verify_command
            examples=[({"data": _deep(2_000)}, KEY_ID, "A" * 86 + "==")],
        ),
        Entry(
            "values",
            values,
            check_values,
            examples=[("decimal", 10**4300)],  # the refusal's message raised ValueError
        ),
    ),
)
