"""The MQTT contract: every builder against its JSON Schema, command parsing against the command
schemas, topics, message ids and decimal formatting."""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from drivers.base import DispenserStatus
from edgectl.cloud import contract
from edgectl.cloud.contract import (
    AckData,
    AuthorizeData,
    CancelData,
    ClearData,
    Command,
    CommandData,
    ContractError,
    GradePrice,
    PricesData,
    ReplayData,
    StopData,
    Topics,
)
from edgectl.errors import CloudError, ConfigError
from edgectl.forecourt.fuelling_point import FPState

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
STATION = "SH-PD-0017"
TS = "2026-11-24T10:21:07.412Z"
NOW = datetime(2026, 11, 24, 10, 20, 30, tzinfo=UTC)
SKEW_S = 30.0

Json = dict[str, Any]


# --------------------------------------------------------------------------- schema plumbing


@cache
def _schemas() -> dict[str, Json]:
    """Every schema file by name ("sale", "cmd-authorize", "common")."""
    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text("utf-8"))
        for path in sorted(SCHEMAS.glob("*.schema.json"))
    }


@cache
def _registry() -> Registry[Any]:
    # No `retrieve`: a $ref that does not resolve among our own files fails instead of fetching.
    return Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
        for schema in _schemas().values()
    )


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        _schemas()[name],
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def schema_errors(name: str, instance: object) -> list[str]:
    return [error.message for error in validator(name).iter_errors(instance)]


def test_schema_files_are_exactly_the_kinds_and_commands() -> None:
    expected = {"common", *contract.STATION_KINDS}
    expected |= {f"cmd-{command_type}" for command_type in contract.COMMAND_TYPES}
    assert set(_schemas()) == expected


@pytest.mark.parametrize("name", sorted(_schemas()))
def test_schema_is_valid_draft_2020_12_with_a_matching_id(name: str) -> None:
    schema = _schemas()[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/v1/{name}.schema.json")


def test_code_constants_match_the_schemas() -> None:
    result = _schemas()["result"]["$defs"]["data"]
    assert set(result["properties"]["code"]["enum"]) == contract.RESULT_CODES
    assert set(result["then"]["properties"]["code"]["enum"]) == contract.ACCEPTED_CODES
    assert contract.ACCEPTED_CODES <= contract.RESULT_CODES
    common = _schemas()["common"]["$defs"]
    assert tuple(common["command_type"]["enum"]) == contract.COMMAND_TYPES
    assert set(contract.DELIVERY) == set(contract.STATION_KINDS)


def test_every_result_code_is_documented() -> None:
    text = (SCHEMAS.parent / "mqtt.md").read_text("utf-8")
    assert [code for code in sorted(contract.RESULT_CODES) if f"`{code}`" not in text] == []


# --------------------------------------------------------------------------- station messages

PRICES = (GradePrice("92", Decimal("7.12")), GradePrice("95", Decimal("7.58")))


def _sale() -> Json:
    return contract.sale_data(
        sale_id=412,
        uid="P3-N2-T120345.67",
        pump=3,
        nozzle=2,
        grade="95",
        volume=Decimal("26.39"),
        amount=Decimal("200.00"),
        unit_price=Decimal("7.58"),
        currency="CNY",
        ended_at="2026-11-24T10:24:51.200Z",
        authorized_by="cloud",
        order_id="o-88812",
        price_set_id="ps-2026-11-20",
        total_volume_before=Decimal("120319.28"),
        total_amount_before=Decimal("911000.10"),
        total_volume_after=Decimal("120345.67"),
        total_amount_after=Decimal("911200.10"),
    )


def _order(status: Any, reason: str | None = None, **changes: Any) -> Json:
    arguments: dict[str, Any] = {
        "preset_type": "amount",
        "preset_value": Decimal("200.00"),
        "currency": "CNY",
    }
    return contract.order_data("o-88812", 3, status, reason, **(arguments | changes))


# One valid payload per kind, with every optional field set, and more where shapes differ.
VALID_DATA: dict[str, list[Callable[[], Json]]] = {
    "result": [
        lambda: contract.result_data(
            "c-20261124-000123", "authorize", "accepted", "ok", "pump 3 authorized", "o-88812"
        ),
        lambda: contract.result_data(
            "c-1", "clear", "accepted", "already_cleared", "", None, duplicate=True
        ),
        lambda: contract.result_data(None, None, "rejected", "invalid", "payload: not JSON"),
        lambda: contract.result_data("c-2", "clear", "accepted", "paid_elsewhere", "paid in shop"),
        lambda: contract.result_data("c-3", "clear", "rejected", "unknown", "no such sale"),
    ],
    "order": [
        lambda: _order("authorized", authorized_at=TS, expires_at="2026-11-24T10:25:00.000Z"),
        lambda: _order("completed", sale=_sale(), authorized_at=TS),
        lambda: _order("failed", "pump_refused"),
        lambda: _order("expired", "no_nozzle_lifted", preset_type="volume"),
    ],
    "sale": [
        _sale,
        lambda: contract.sale_data(
            sale_id=1,
            uid="P1-A7-E2026-11-24T10:21:07.412Z",
            pump=1,
            nozzle=1,
            grade="0#",
            volume=Decimal("0.01"),
            amount=Decimal("0.07"),
            unit_price=Decimal("7.12"),
            currency="CNY",
            ended_at=TS,
            authorized_by="auto",
        ),
    ],
    "alarm": [
        lambda: contract.alarm_data(
            7,
            "totals_mismatch",
            "critical",
            "pump 3 nozzle 2: totals moved by 26.40 volume but the sale is 26.39",
            raised_at=TS,
            pump=3,
            nozzle=2,
        ),
        lambda: contract.alarm_data(
            8, "pump_alarm", "warning", "cleared", raised_at=TS, cleared_at=TS
        ),
    ],
    "price": [
        lambda: contract.price_data("ps-2026-11-20", 3, "applied", PRICES, currency="CNY"),
        lambda: contract.price_data(
            "ps-2026-11-20", 4, "failed", PRICES, "pump_offline", currency="CNY"
        ),
    ],
    "pump_state": [
        lambda: contract.pump_state_data(
            3,
            FPState.FUELLING,
            status=DispenserStatus.FILLING,
            nozzle=2,
            nozzle_out=True,
            grade="95",
            volume=Decimal("12.04"),
            amount=Decimal("91.26"),
            online=True,
            order_id="o-88812",
        ),
        lambda: contract.pump_state_data(
            5,
            FPState.INOPERATIVE,
            status=None,
            nozzle=None,
            nozzle_out=False,
            grade=None,
            volume=None,
            amount=None,
            online=False,
        ),
    ],
    "prices": [
        lambda: contract.prices_data("ps-2026-11-20", PRICES, currency="CNY"),
        lambda: contract.prices_data(None, PRICES[:1], currency="EUR"),
    ],
    "online": [
        lambda: contract.online_data(True, "0.1.0"),
        lambda: contract.online_data(False, "0.1.0"),
    ],
    "heartbeat": [lambda: contract.heartbeat_data(86_400, 0)],
    "inventory": [
        lambda: contract.inventory_data(
            1,
            "92",
            measured_at=TS,
            height_mm=Decimal("1234.5"),
            water_mm=Decimal("12.0"),
            temperature_c=Decimal("-3.25"),
            product_l=Decimal("14812.40"),
            net_l=Decimal("15010.02"),
            water_l=Decimal("55.10"),
            ullage_l=Decimal("15132.50"),
            fill_pct=Decimal("49.56"),
        ),
    ],
    "reconciliation": [
        lambda: contract.reconciliation_data(
            1,
            "2026-11-23",
            opening=Decimal("15000.00"),
            deliveries=Decimal("3000.00"),
            sales=Decimal("2500.00"),
            closing=Decimal("15480.00"),
            variance=Decimal("-20.00"),
            cumulative_variance=Decimal("-35.50"),
            limit=Decimal("617.10"),
            flagged=False,
            day_flagged=False,
        ),
    ],
    "delivery": [
        lambda: contract.delivery_data(
            3,
            1,
            "gauge",
            start_at=TS,
            end_at=TS,
            start_volume=Decimal("12000.00"),
            end_volume=Decimal("14994.62"),
            delivered=Decimal("3000.00"),
            delivered_tc=Decimal("3011.20"),
            dispensed_during=Decimal("5.38"),
        ),
        lambda: contract.delivery_data(
            4,
            2,
            "detected",
            start_at=TS,
            end_at=TS,
            start_volume=Decimal("100"),
            end_volume=Decimal("90"),
            delivered=Decimal("-10"),
            delivered_tc=Decimal("-10.1"),
            dispensed_during=None,
        ),
    ],
}


def _wrap(kind: str, data: Json, seq: int = 18452) -> Json:
    if kind in contract.LATEST_VALUE:
        return contract.envelope(kind, STATION, 0, TS, data, version=seq)
    outside = kind in contract.OUTSIDE_SEQUENCE
    return contract.envelope(kind, STATION, 0 if outside else seq, TS, data)


def _valid_messages() -> list[tuple[str, Callable[[], Json]]]:
    return [(kind, build) for kind, builds in VALID_DATA.items() for build in builds]


def test_there_is_a_valid_example_of_every_kind() -> None:
    assert set(VALID_DATA) == set(contract.STATION_KINDS)


@pytest.mark.parametrize(("kind", "build"), _valid_messages())
def test_builder_output_validates_against_its_schema(kind: str, build: Callable[[], Json]) -> None:
    message = _wrap(kind, build())
    assert schema_errors(kind, message) == []
    # …and still does after the trip over the wire.
    assert schema_errors(kind, json.loads(contract.encode(message))) == []


@pytest.mark.parametrize("state", list(FPState))
@pytest.mark.parametrize("status", [*DispenserStatus, None])
def test_every_fuelling_point_state_and_dispenser_status_is_in_the_schema(
    state: FPState, status: DispenserStatus | None
) -> None:
    data = contract.pump_state_data(
        1,
        state,
        status=status,
        nozzle=None,
        nozzle_out=False,
        grade=None,
        volume=None,
        amount=None,
        online=status is not None,
    )
    assert (data["state"], data["state_code"]) == (state.name.lower(), int(state))
    assert schema_errors("pump_state", _wrap("pump_state", data)) == []


def _set(path: str, value: object) -> Callable[[Json], None]:
    """A mutation that sets a dotted path ("data.sale.volume", "data.prices.0.unit_price")."""

    def mutate(message: Json) -> None:
        *parents, last = path.split(".")
        target: Any = message
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _delete(path: str) -> Callable[[Json], None]:
    def mutate(message: Json) -> None:
        *parents, last = path.split(".")
        target: Any = message
        for key in parents:
            target = target[key]
        del target[last]

    return mutate


# (kind, which example, what is broken, mutation). Each must make the schema reject the message.
BROKEN: list[tuple[str, int, str, Callable[[Json], None]]] = [
    ("sale", 0, "float volume", _set("data.volume", 26.39)),
    ("sale", 0, "integer amount", _set("data.amount", 200)),
    ("sale", 0, "exponent amount", _set("data.amount", "2E+2")),
    ("sale", 0, "negative volume", _set("data.volume", "-26.39")),
    ("sale", 0, "float totals", _set("data.total_volume_after", 120345.67)),
    ("sale", 0, "lower-case currency", _set("data.currency", "cny")),
    ("sale", 0, "nozzle 16", _set("data.nozzle", 16)),
    ("sale", 0, "unknown authorization source", _set("data.authorized_by", "card")),
    ("order", 1, "float money in the sale", _set("data.sale.amount", 200.0)),
    ("order", 1, "completed without its sale", _set("data.sale", None)),
    ("order", 0, "a sale on a step that is not completed", _set("data.sale", {})),
    ("order", 2, "failed without a reason", _set("data.reason", None)),
    ("order", 0, "unknown status", _set("data.status", "paid")),
    ("order", 0, "float preset", _set("data.preset.value", 200.0)),
    ("order", 0, "zero preset", _set("data.preset.value", "0")),
    ("price", 0, "float unit price", _set("data.prices.0.unit_price", 7.12)),
    ("price", 0, "zero unit price", _set("data.prices.0.unit_price", "0.00")),
    ("price", 0, "no prices", _set("data.prices", [])),
    ("price", 1, "failed without a reason", _set("data.reason", None)),
    ("prices", 0, "float unit price", _set("data.prices.1.unit_price", 7.58)),
    (
        "prices",
        0,
        "the same entry twice",
        _set("data.prices.1", {"grade": "92", "unit_price": "7.12"}),
    ),
    ("pump_state", 0, "float volume", _set("data.volume", 12.04)),
    (
        "pump_state",
        0,
        "state code and name disagree",
        _set("data.state_code", 3),
    ),
    ("pump_state", 0, "unknown dispenser status", _set("data.status", "busy")),
    ("result", 0, "accepted with a rejection code", _set("data.code", "pump_busy")),
    ("result", 2, "rejected with code ok", _set("data.code", "ok")),
    ("result", 2, "rejected with paid_elsewhere", _set("data.code", "paid_elsewhere")),
    ("result", 0, "accepted with unknown", _set("data.code", "unknown")),
    ("result", 0, "unknown code", _set("data.code", "nope")),
    ("result", 0, "unknown command type", _set("data.type", "reboot")),
    ("alarm", 0, "unknown severity", _set("data.severity", "fatal")),
    ("alarm", 0, "kind with spaces", _set("data.kind", "totals mismatch")),
    ("online", 0, "online as a string", _set("data.online", "true")),
    ("online", 0, "online inside the sequence", _set("seq", 7)),
    ("heartbeat", 0, "float uptime", _set("data.uptime_s", 86400.5)),
    ("heartbeat", 0, "negative outbox depth", _set("data.outbox_depth", -1)),
    ("heartbeat", 0, "heartbeat inside the sequence", _set("seq", 5)),
    ("sale", 0, "an outbox message outside the sequence", _set("seq", 0)),
]
for _kind in contract.STATION_KINDS:
    _first_field = next(iter(VALID_DATA[_kind][0]()))
    BROKEN += [
        (_kind, 0, f"missing data.{_first_field}", _delete(f"data.{_first_field}")),
        (_kind, 0, "extra data field", _set("data.note", "x")),
        (_kind, 0, "extra envelope field", _set("note", "x")),
        (_kind, 0, "missing msg_id", _delete("msg_id")),
        (_kind, 0, "msg_id not a UUID", _set("msg_id", "18452")),
        (_kind, 0, "another kind's schema", _set("schema", "edgectl/v1/other")),
        (_kind, 0, "another major version", _set("schema", f"edgectl/v2/{_kind}")),
        (_kind, 0, "ts with an offset, not Z", _set("ts", "2026-11-24T12:21:07.412+02:00")),
        (_kind, 0, "ts on a day that does not exist", _set("ts", "2026-02-30T10:21:07.412Z")),
        (_kind, 0, "station with a slash", _set("station", "SH/PD")),
    ]


@pytest.mark.parametrize(
    ("kind", "example", "mutate"),
    [
        pytest.param(kind, example, mutate, id=f"{kind}: {why}")
        for kind, example, why, mutate in BROKEN
    ],
)
def test_schema_rejects_a_broken_message(
    kind: str, example: int, mutate: Callable[[Json], None]
) -> None:
    message = _wrap(kind, VALID_DATA[kind][example]())
    assert schema_errors(kind, message) == []
    broken = copy.deepcopy(message)
    mutate(broken)
    assert schema_errors(kind, broken) != []


# The module without its types, to call it the way a careless caller might.
loose: Any = contract

BAD_BUILDS: list[tuple[str, Callable[[], object]]] = [
    ("float volume", lambda: _sale_with(volume=26.39)),
    ("negative amount", lambda: _sale_with(amount=Decimal("-1"))),
    ("NaN unit price", lambda: _sale_with(unit_price=Decimal("NaN"))),
    ("unknown authorization source", lambda: _sale_with(authorized_by="card")),
    ("ended_at without Z", lambda: _sale_with(ended_at="2026-11-24T10:24:51")),
    ("pump 100", lambda: _sale_with(pump=100)),
    ("grade with a newline", lambda: _sale_with(grade="95\n")),
    (
        "accepted with a rejection code",
        lambda: contract.result_data("c", "stop", "accepted", "pump_busy", ""),
    ),
    ("rejected with ok", lambda: contract.result_data("c", "stop", "rejected", "ok", "")),
    ("unknown result code", lambda: contract.result_data("c", "stop", "rejected", "nope", "")),
    (
        "unknown command type",
        lambda: contract.result_data("c", "reboot", "rejected", "invalid", ""),
    ),
    ("completed without a sale", lambda: _order("completed")),
    ("a sale before completion", lambda: _order("fuelling", sale=_sale())),
    ("failed without a reason", lambda: _order("failed")),
    ("reason that is not a code", lambda: _order("failed", "Pump Refused")),
    ("unknown order status", lambda: _order("paid")),
    ("unknown preset type", lambda: _order("accepted", preset_type="litres")),
    ("float preset", lambda: _order("accepted", preset_value=200.0)),
    ("zero preset", lambda: _order("accepted", preset_value=Decimal("0.00"))),
    ("same grade twice", lambda: contract.prices_data("p", PRICES + PRICES[:1], currency="CNY")),
    ("no prices", lambda: contract.prices_data("p", (), currency="CNY")),
    (
        "zero price",
        lambda: contract.prices_data("p", (GradePrice("95", Decimal(0)),), currency="CNY"),
    ),
    (
        "price failed without reason",
        lambda: contract.price_data("p", 1, "failed", PRICES, currency="CNY"),
    ),
    ("unknown severity", lambda: loose.alarm_data(1, "x", "fatal", "", raised_at=TS)),
    (
        "state as an int",
        lambda: loose.pump_state_data(
            1,
            3,
            status=None,
            nozzle=None,
            nozzle_out=False,
            grade=None,
            volume=None,
            amount=None,
            online=False,
        ),
    ),
    ("float uptime", lambda: loose.heartbeat_data(1.5, 0)),
    ("online as a string", lambda: loose.online_data("yes", "0.1.0")),
    (
        "status as a string",
        lambda: loose.pump_state_data(
            1,
            FPState.IDLE,
            status="reset",
            nozzle=None,
            nozzle_out=False,
            grade=None,
            volume=None,
            amount=None,
            online=True,
        ),
    ),
    (
        "nozzle_out as an int",
        lambda: loose.pump_state_data(
            1,
            FPState.IDLE,
            status=None,
            nozzle=None,
            nozzle_out=0,
            grade=None,
            volume=None,
            amount=None,
            online=True,
        ),
    ),
]


def _sale_with(**changes: object) -> Json:
    arguments: dict[str, Any] = {
        "sale_id": 1,
        "uid": "u-1",
        "pump": 1,
        "nozzle": 1,
        "grade": "95",
        "volume": Decimal("1.00"),
        "amount": Decimal("7.58"),
        "unit_price": Decimal("7.58"),
        "currency": "CNY",
        "ended_at": TS,
        "authorized_by": "auto",
    }
    return contract.sale_data(**(arguments | changes))


@pytest.mark.parametrize(("why", "build"), BAD_BUILDS, ids=[why for why, _ in BAD_BUILDS])
def test_builder_refuses_what_the_contract_does_not_allow(
    why: str, build: Callable[[], object]
) -> None:
    with pytest.raises(ContractError) as caught:
        build()
    assert caught.value.code == "invalid"


def test_builders_write_decimals_exactly_as_given() -> None:
    sale = _sale_with(volume=Decimal("25.370"), amount=Decimal("2E+2"), unit_price=Decimal("7.9"))
    assert (sale["volume"], sale["amount"], sale["unit_price"]) == ("25.370", "200", "7.9")


# --------------------------------------------------------------------------- envelope and ids


def test_envelope_shape() -> None:
    data = _sale()
    assert contract.envelope("sale", STATION, 18452, TS, data) == {
        "schema": "edgectl/v1/sale",
        "msg_id": contract.message_id(STATION, 18452),
        "station": STATION,
        "seq": 18452,
        "version": None,
        "ts": TS,
        "data": data,
    }


def test_latest_value_state_has_a_version_and_no_seq() -> None:
    data = contract.prices_data("ps-1", PRICES[:1], currency="CNY")
    given = str(uuid.uuid4())
    message = contract.envelope("prices", STATION, 0, TS, data, given, version=7)
    assert (message["seq"], message["version"], message["msg_id"]) == (0, 7, given)
    assert schema_errors("prices", message) == []
    for seq, version in ((1, 7), (0, None), (0, 0)):
        with pytest.raises(ContractError):
            contract.envelope("prices", STATION, seq, TS, data, version=version)
    with pytest.raises(ContractError):  # a guaranteed kind has no version
        contract.envelope("sale", STATION, 1, TS, _sale(), version=1)


def test_every_station_kind_is_guaranteed_latest_value_or_outside() -> None:
    guaranteed = set(contract.GUARANTEED_STREAMS)
    assert guaranteed | contract.LATEST_VALUE | contract.OUTSIDE_SEQUENCE == set(
        contract.STATION_KINDS
    )
    assert not guaranteed & (contract.LATEST_VALUE | contract.OUTSIDE_SEQUENCE)
    assert _schemas()["common"]["$defs"]["stream"]["enum"] == list(contract.GUARANTEED_STREAMS)


def test_msg_id_is_a_uuid5_of_station_epoch_and_seq() -> None:
    first = contract.message_id(STATION, 18452, "9f3a")
    assert contract.message_id(STATION, 18452, "9f3a") == first  # a re-send: the same id
    assert uuid.UUID(first).version == 5
    assert contract.message_id(STATION, 18453, "9f3a") != first
    assert contract.message_id("SH-PD-0018", 18452, "9f3a") != first
    # A rebuilt store (new epoch) starts seq again but never repeats an id.
    assert contract.message_id(STATION, 18452, "77c1") != first
    # The recipe docs/mqtt.md gives, so anyone can recompute it.
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "urn:edgectl:v1:msg_id")
    assert first == str(uuid.uuid5(namespace, f"{STATION}:9f3a:18452"))


def test_msg_id_is_the_same_as_uuid5_made_it_for_every_row() -> None:
    """message_id writes the UUID out itself (it is cheaper): the ids of rows queued before
    that change are the ids sent after it, so the cloud still drops a re-sent duplicate."""
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "urn:edgectl:v1:msg_id")
    for station, epoch in ((STATION, "9f3a"), ("SH-PD-0018", ""), ("BENCH-01", "e" * 32)):
        for seq in (*range(1, 3000), 2**31, 2**63 - 1):
            expected = str(uuid.uuid5(namespace, f"{station}:{epoch}:{seq}"))
            assert contract.message_id(station, seq, epoch) == expected


def test_envelope_msg_id_depends_only_on_station_and_seq() -> None:
    one = contract.envelope("sale", STATION, 9, TS, _sale())
    again = contract.envelope("sale", STATION, 9, "2026-11-25T00:00:00.000Z", {"other": 1})
    assert one["msg_id"] == again["msg_id"] == contract.message_id(STATION, 9)
    given = str(uuid.uuid4())
    assert contract.envelope("sale", STATION, 9, TS, _sale(), msg_id=given)["msg_id"] == given


def test_online_and_heartbeat_are_outside_the_sequence_with_content_ids() -> None:
    will = contract.envelope("online", STATION, 0, TS, contract.online_data(False, "0.1.0"))
    hello = contract.envelope("online", STATION, 0, TS, contract.online_data(True, "0.1.0"))
    later = contract.envelope(
        "online", STATION, 0, "2026-11-24T11:00:00.000Z", contract.online_data(True, "0.1.0")
    )
    ids = {will["msg_id"], hello["msg_id"], later["msg_id"]}
    assert len(ids) == 3
    assert contract.message_id(STATION, 0) not in ids
    again = contract.envelope("online", STATION, 0, TS, contract.online_data(False, "0.1.0"))
    assert again["msg_id"] == will["msg_id"]
    beats = {
        contract.envelope("heartbeat", STATION, 0, TS, contract.heartbeat_data(s, 0))["msg_id"]
        for s in (10, 20)
    }
    assert len(beats) == 2


@pytest.mark.parametrize(
    ("kind", "seq", "ts", "msg_id"),
    [
        ("sales", 1, TS, None),  # unknown kind
        ("sale", 0, TS, None),  # only online is outside the sequence
        ("sale", -1, TS, None),
        ("sale", True, TS, None),
        ("online", 1, TS, None),
        ("heartbeat", 1, TS, None),
        ("sale", 1, "2026-11-24 10:21:07", None),
        ("sale", 1, TS, "not-a-uuid"),
        ("sale", 1, TS, "3F2C0A0E-5B1E-5D43-9A63-0D3F4B8B2C11"),  # upper case
    ],
)
def test_envelope_refuses(kind: str, seq: int, ts: str, msg_id: str | None) -> None:
    with pytest.raises(ContractError):
        contract.envelope(kind, STATION, seq, ts, {}, msg_id)


def test_encode_is_compact_utf8_json() -> None:
    message = contract.envelope("price", STATION, 3, TS, {"grade": "柴油", "n": None})
    encoded = contract.encode(message)
    assert b" " not in encoded
    assert "柴油".encode() in encoded
    assert json.loads(encoded) == message


@pytest.mark.parametrize("value", [7.5, Decimal("7.5"), {1: "x"}, {"a": [1, {"b": float("nan")}]}])
def test_encode_refuses_what_is_not_plain_json(value: object) -> None:
    with pytest.raises(ContractError):
        contract.encode({"data": value})


@pytest.mark.parametrize(
    ("kind", "seq", "version", "data"),
    [
        ("alarm", 18, None, {"message": '泵 3 离线 "15 °C"', "pump": 3, "cleared_at": None}),
        ("sale", 1, None, {"amount": "200.00", "nested": [{"a": True}, []], "empty": {}}),
        ("pump_state", 0, 7, {"pump": 12, "state": "idle"}),
        ("price", 9, None, {}),
    ],
)
def test_a_message_put_together_around_stored_data_is_the_message_encode_writes(
    kind: str, seq: int, version: int | None, data: dict[str, Any]
) -> None:
    # The outbox keeps `data` as encode_data wrote it; the publisher puts the envelope around
    # it without decoding it. The bytes must be those of encoding the whole message.
    msg_id = contract.message_id(STATION, 41, "epoch")
    stored = contract.encode_data(data)
    sent = contract.encode_envelope(kind, STATION, seq, TS, stored, msg_id, version=version)
    whole = contract.envelope(kind, STATION, seq, TS, data, msg_id, version=version)
    assert sent == contract.encode(whole)
    assert json.loads(sent) == whole


def test_the_head_written_out_is_the_one_encode_writes_for_every_kind() -> None:
    # encode_envelope writes the head with an f-string, not json.dumps: for every kind, with
    # and without a version, and microseconds in `ts`, the bytes are still encode's.
    data = {"text": '泵 "3" \\ 离线', "n": 7}
    stored = contract.encode_data(data)
    for kind in contract.STATION_KINDS:
        latest = kind in contract.LATEST_VALUE
        seq = 0 if latest or kind in contract.OUTSIDE_SEQUENCE else 2**63 - 1
        version = 3 if latest else None
        for ts in (TS, "2026-11-24T10:21:07.412345Z", "2026-11-24T10:21:07Z"):
            msg_id = contract.message_id(STATION, 7)
            sent = contract.encode_envelope(kind, STATION, seq, ts, stored, msg_id, version=version)
            whole = contract.envelope(kind, STATION, seq, ts, data, msg_id, version=version)
            assert sent == contract.encode(whole)


def test_the_kind_and_station_are_checked_on_every_call() -> None:
    # They are checked once per pair and remembered: a refused one is refused every time.
    msg_id = contract.message_id(STATION, 41)
    for _ in range(2):
        with pytest.raises(ContractError):
            contract.encode_envelope("sales", STATION, 3, TS, "{}", msg_id)
        with pytest.raises(ContractError):
            contract.encode_envelope("sale", "bad station", 3, TS, "{}", msg_id)
        with pytest.raises(ContractError):
            contract.encode_envelope("sale", STATION, 3, TS, "{}", msg_id.upper())
        with pytest.raises(ContractError):
            contract.encode_envelope("pump_state", STATION, 0, TS, "{}", msg_id)  # no version
        with pytest.raises(ContractError):
            contract.encode_envelope("sale", STATION, 3, TS, "{}", msg_id, version=1)


@pytest.mark.parametrize("value", [7.5, Decimal("7.5"), {1: "x"}, "\ud800", [float("inf")]])
def test_encode_data_refuses_what_encode_refuses(value: object) -> None:
    with pytest.raises(ContractError):
        contract.encode({"data": {"v": value}})
    with pytest.raises(ContractError):
        contract.encode_data({"v": value})


def test_the_envelope_around_stored_data_is_checked_as_ever() -> None:
    msg_id = contract.message_id(STATION, 41)
    with pytest.raises(ContractError):
        contract.encode_envelope("sale", STATION, 0, TS, "{}", msg_id)  # a guaranteed kind: seq 0
    with pytest.raises(ContractError):
        contract.encode_envelope("sale", STATION, 3, "yesterday", "{}", msg_id)


# --------------------------------------------------------------------------- decimals and time


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [
        (Decimal("200"), 2, "200.00"),
        (Decimal("7.5"), 3, "7.500"),
        (Decimal("25.37"), 2, "25.37"),
        (Decimal("2E+2"), 0, "200"),
        (Decimal("1.230"), 2, "1.23"),  # a trailing zero is not a significant decimal
        (Decimal("-0.00"), 2, "0.00"),
        (Decimal("-3.1"), 1, "-3.1"),
        (Decimal("0"), 0, "0"),
    ],
)
def test_money(value: Decimal, places: int, text: str) -> None:
    assert contract.money(value, places) == text


@pytest.mark.parametrize(
    ("value", "places"),
    [
        (Decimal("7.456"), 2),  # would round: rounding money is decided before formatting
        (Decimal("0.5"), 0),
        (Decimal("NaN"), 2),
        (Decimal("Infinity"), 2),
        (Decimal("1E+40"), 2),  # more digits than the decimal context holds
        (7.5, 2),
        (Decimal("1"), -1),
        (Decimal("1"), True),
    ],
)
def test_money_refuses(value: Any, places: Any) -> None:
    with pytest.raises(ContractError):
        contract.money(value, places)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("25.370"), "25.370"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("-0"), "0"),
    ],
)
def test_decimal_text_is_plain_and_exact(value: Decimal, text: str) -> None:
    assert contract.decimal_text(value) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("200.00", Decimal("200.00")),
        ("0", Decimal(0)),
        ("-1.5", Decimal("-1.5")),
        ("007", Decimal(7)),
    ],
)
def test_parse_decimal(text: str, value: Decimal) -> None:
    parsed = contract.parse_decimal(text, "x")
    assert (parsed, str(parsed)) == (value, str(value))  # the places sent are kept


@pytest.mark.parametrize(
    "value",
    [
        200.0,
        200,
        True,
        None,
        "2E+2",
        "+1",
        "1.",
        ".5",
        " 1",
        "1 ",
        "NaN",
        "Infinity",
        "1,5",
        "١٢",
        "1" * 33,
        "1.0\n",
    ],
)
def test_parse_decimal_refuses(value: object) -> None:
    with pytest.raises(ContractError) as caught:
        contract.parse_decimal(value, "data.preset.value")
    assert caught.value.code == "invalid"
    assert str(caught.value).startswith("data.preset.value: ")


def test_timestamps() -> None:
    moment = datetime(2026, 11, 24, 18, 21, 7, 412_345, tzinfo=timezone(timedelta(hours=8)))
    assert contract.timestamp(moment) == "2026-11-24T10:21:07.412Z"
    assert contract.parse_timestamp("2026-11-24T10:21:07.412Z", "ts") == datetime(
        2026, 11, 24, 10, 21, 7, 412_000, tzinfo=UTC
    )
    assert contract.parse_timestamp("2026-11-24T10:21:07Z", "ts").tzinfo is not None
    with pytest.raises(ContractError):
        contract.timestamp(datetime(2026, 11, 24))  # naive
    for text in [
        "2026-11-24T10:21:07",
        "2026-11-24T10:21:07+00:00",
        "2026-02-30T00:00:00Z",
        "2026-11-24T10:21:07.1234567Z",
        "2026-11-24 10:21:07Z",
    ]:
        with pytest.raises(ContractError):
            contract.parse_timestamp(text, "ts")


# --------------------------------------------------------------------------- topics


def test_topics() -> None:
    topics = Topics("edgectl", STATION)
    base = f"edgectl/v1/{STATION}"
    assert topics.command("authorize") == f"{base}/cmd/authorize"
    assert topics.commands_filter == f"{base}/cmd/+"
    assert topics.result == f"{base}/result"
    assert topics.event("order") == f"{base}/evt/order"
    assert topics.event("sale") == f"{base}/evt/sale"
    assert topics.heartbeat == f"{base}/evt/heartbeat"
    assert topics.online == f"{base}/state/online"
    assert topics.pump_state(3) == f"{base}/state/pump/3"
    assert topics.prices == f"{base}/state/prices"
    assert Topics("acme/fleet", STATION).result == f"acme/fleet/v1/{STATION}/result"


def test_topics_refuse_unknown_names() -> None:
    topics = Topics("edgectl", STATION)
    with pytest.raises(ContractError):
        topics.command("reboot")
    with pytest.raises(ContractError):
        topics.event("result")
    with pytest.raises(ContractError):
        topics.pump_state(0)


@pytest.mark.parametrize(
    ("prefix", "station"),
    [
        ("", STATION),
        ("a//b", STATION),
        ("/edgectl", STATION),
        ("edgectl/", STATION),
        ("edge+", STATION),
        ("edge/#", STATION),
        ("$SYS", STATION),
        ("edgectl", "SH/PD"),
        ("edgectl", "+"),
        ("edgectl", ""),
    ],
)
def test_topics_refuse_a_prefix_or_station_unusable_in_a_topic(prefix: str, station: str) -> None:
    with pytest.raises(ConfigError):
        Topics(prefix, station)


@pytest.mark.parametrize(
    ("topic", "command_type"),
    [
        (f"edgectl/v1/{STATION}/cmd/authorize", "authorize"),
        (f"edgectl/v1/{STATION}/cmd/clear", "clear"),
        (f"edgectl/v1/{STATION}/cmd/reboot", "reboot"),  # answered as invalid by parse_command
        (f"edgectl/v1/{STATION}/cmd/", None),
        (f"edgectl/v1/{STATION}/cmd/clear/extra", None),
        (f"edgectl/v1/{STATION}/result", None),
        (f"edgectl/v1/{STATION}0/cmd/stop", None),
        ("edgectl/v1/SH-PD-0018/cmd/stop", None),
        (f"edgectl/v2/{STATION}/cmd/stop", None),
        (f"other/v1/{STATION}/cmd/stop", None),
    ],
)
def test_parse_command_topic(topic: str, command_type: str | None) -> None:
    assert Topics("edgectl", STATION).parse_command_topic(topic) == command_type


# --------------------------------------------------------------------------- commands

ISSUED = "2026-11-24T10:20:00.000Z"
EXPIRES = "2026-11-24T10:21:00.000Z"
SIG = "A" * 86 + "=="

VALID_COMMAND_DATA: dict[str, Json] = {
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
    "clear": {"order_id": "o-88812"},
    "ack": {"stream": "sale", "seq": 18452},
    "replay": {"stream": "sale", "from_seq": 18440, "to_seq": 18452},
}


def command(command_type: str, *, data: object = None, **top: object) -> Json:
    """A valid, signed-looking command of `command_type`; keyword arguments replace fields
    (a value of `...` removes it)."""
    message: Json = {
        "schema": f"edgectl/v1/cmd/{command_type}",
        "cmd_id": "c-20261124-000123",
        "station": STATION,
        "issued_at": ISSUED,
        "expires_at": EXPIRES,
        "key_id": "cloud-2026a",
        "data": copy.deepcopy(VALID_COMMAND_DATA[command_type]) if data is None else data,
        "sig": SIG,
    }
    for key, value in (top | {"data": data} if data is ... else top).items():
        if value is ...:
            del message[key]
        else:
            message[key] = value
    return message


def authorize(**changes: object) -> Json:
    """An authorize command whose data has `changes` applied (`...` removes a field)."""
    data = copy.deepcopy(VALID_COMMAND_DATA["authorize"])
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return command("authorize", data=data)


def preset(kind: object, value: object) -> Json:
    return authorize(preset={"type": kind, "value": value})


@dataclass(frozen=True)
class Case:
    """A command, the topic type it arrives on, and what `parse_command` must say (None: parses).

    `beyond_schema` says why the JSON Schema cannot agree with the code on this one; when it is
    empty the schema must accept exactly when the code does.
    """

    name: str
    type: str
    message: Json
    code: str | None
    beyond_schema: str = ""


TIME = "relative to the station clock"
RELATION = "a relation between two fields"
UNSIGNED = "a missing signature is the signing module's 'unsigned'; the schema requires sig"

CASES: list[Case] = [
    # --- valid
    *[Case(f"valid {t}", t, command(t), None) for t in contract.COMMAND_TYPES],
    Case(
        "authorize, only required fields",
        "authorize",
        authorize(grades=..., nozzles=..., payment_method=..., expires_at=...),
        None,
    ),
    Case("authorize a volume", "authorize", preset("volume", "30"), None),
    Case("preset with leading zeros", "authorize", preset("amount", "0.5"), None),
    Case(
        "prices now",
        "prices",
        command(
            "prices",
            data={k: v for k, v in VALID_COMMAND_DATA["prices"].items() if k != "effective_at"},
        ),
        None,
    ),
    Case("clear by sale_id", "clear", command("clear", data={"sale_id": 412}), None),
    # --- ack and replay (contract 1.1)
    Case("ack nothing yet", "ack", command("ack", data={"stream": "result", "seq": 0}), None),
    Case(
        "ack of latest-value state",
        "ack",
        command("ack", data={"stream": "pump_state", "seq": 3}),
        "invalid",
    ),
    Case("ack, negative seq", "ack", command("ack", data={"stream": "sale", "seq": -1}), "invalid"),
    Case("ack, seq true", "ack", command("ack", data={"stream": "sale", "seq": True}), "invalid"),
    Case("ack without seq", "ack", command("ack", data={"stream": "sale"}), "invalid"),
    Case(
        "replay of one message",
        "replay",
        command("replay", data={"stream": "order", "from_seq": 7, "to_seq": 7}),
        None,
    ),
    Case(
        "replay from 0",
        "replay",
        command("replay", data={"stream": "order", "from_seq": 0, "to_seq": 7}),
        "invalid",
    ),
    Case(
        "replay backwards",
        "replay",
        command("replay", data={"stream": "order", "from_seq": 8, "to_seq": 7}),
        "invalid",
        RELATION,
    ),
    Case(
        "replay of an unknown stream",
        "replay",
        command("replay", data={"stream": "sales", "from_seq": 1, "to_seq": 7}),
        "invalid",
    ),
    Case(
        "expired, but within the clock skew",
        "cancel",
        command("cancel", expires_at="2026-11-24T10:20:05.000Z"),
        None,
    ),
    Case(
        "issued in the future, within the clock skew",
        "cancel",
        command("cancel", issued_at="2026-11-24T10:20:50.000Z"),
        None,
    ),
    Case(
        "microseconds and no fraction",
        "stop",
        command("stop", issued_at="2026-11-24T10:20:00.123456Z", expires_at="2026-11-24T10:21:00Z"),
        None,
    ),
    Case("unsigned", "stop", command("stop", sig=..., key_id=...), None, UNSIGNED),
    # --- the envelope
    Case(
        "wrong schema",
        "authorize",
        command("authorize", schema="edgectl/v1/cmd/authorise"),
        "invalid",
    ),
    Case(
        "another major version",
        "authorize",
        command("authorize", schema="edgectl/v2/cmd/authorize"),
        "invalid",
    ),
    Case("schema and topic disagree", "authorize", command("cancel"), "invalid"),
    Case("schema not a string", "stop", command("stop", schema=1), "invalid"),
    Case("missing cmd_id", "stop", command("stop", cmd_id=...), "invalid"),
    Case("empty cmd_id", "stop", command("stop", cmd_id=""), "invalid"),
    Case("cmd_id of 129 characters", "stop", command("stop", cmd_id="c" * 129), "invalid"),
    Case("cmd_id with a space", "stop", command("stop", cmd_id="c 1"), "invalid"),
    Case("unknown top-level field", "stop", command("stop", priority=1), "invalid"),
    Case("missing data", "stop", command("stop", data=...), "invalid"),
    Case("data not an object", "stop", command("stop", data=[3]), "invalid"),
    Case("sig not a string", "stop", command("stop", sig=1), "invalid"),
    Case("empty sig", "stop", command("stop", sig=""), "invalid"),
    Case("key_id not a string", "stop", command("stop", key_id=["k"]), "invalid"),
    Case("station not a station id", "stop", command("stop", station="SH PD"), "invalid"),
    Case(
        "wrong station",
        "stop",
        command("stop", station="SH-PD-0018"),
        "wrong_station",
        "the station id is per deployment",
    ),
    Case(
        "issued_at with an offset",
        "stop",
        command("stop", issued_at="2026-11-24T18:20:00.000+08:00"),
        "invalid",
    ),
    Case(
        "issued_at on a day that does not exist",
        "stop",
        command("stop", issued_at="2026-02-30T10:20:00.000Z"),
        "invalid",
    ),
    Case("expires_at a number", "stop", command("stop", expires_at=1795861260), "invalid"),
    Case(
        "expires before it is issued",
        "stop",
        command("stop", expires_at="2026-11-24T10:19:00.000Z"),
        "invalid",
        RELATION,
    ),
    Case(
        "valid for more than 24 h",
        "stop",
        command("stop", expires_at="2026-11-25T10:20:00.001Z"),
        "invalid",
        RELATION,
    ),
    Case(
        "expired",
        "stop",
        command(
            "stop", expires_at="2026-11-24T10:19:59.000Z", issued_at="2026-11-24T10:19:00.000Z"
        ),
        "expired",
        TIME,
    ),
    Case(
        "not yet valid",
        "stop",
        command(
            "stop", issued_at="2026-11-24T10:21:01.000Z", expires_at="2026-11-24T10:22:00.000Z"
        ),
        "not_yet_valid",
        TIME,
    ),
    # --- authorize
    Case("float money", "authorize", preset("amount", 200.0), "invalid"),
    Case("integer money", "authorize", preset("amount", 200), "invalid"),
    Case("money with an exponent", "authorize", preset("amount", "2E+2"), "invalid"),
    Case("negative preset", "authorize", preset("amount", "-5.00"), "invalid"),
    Case("zero preset", "authorize", preset("amount", "0.00"), "invalid"),
    Case("unknown preset type", "authorize", preset("litres", "30"), "invalid"),
    Case(
        "unknown preset field",
        "authorize",
        authorize(preset={"type": "amount", "value": "1", "max": "2"}),
        "invalid",
    ),
    Case("unknown data field", "authorize", authorize(tip="5.00"), "invalid"),
    Case("missing order_id", "authorize", authorize(order_id=...), "invalid"),
    Case("missing preset", "authorize", authorize(preset=...), "invalid"),
    Case("pump 0", "authorize", authorize(pump=0), "invalid"),
    Case("pump 100", "authorize", authorize(pump=100), "invalid"),
    Case("pump as a string", "authorize", authorize(pump="3"), "invalid"),
    Case("pump as a boolean", "authorize", authorize(pump=True), "invalid"),
    Case(
        "pump as 3.0",
        "authorize",
        authorize(pump=3.0),
        "invalid",
        "JSON Schema counts 3.0 as an integer",
    ),
    Case("lower-case currency", "authorize", authorize(currency="cny"), "invalid"),
    Case("no grades", "authorize", authorize(grades=[]), "invalid"),
    Case("the same grade twice", "authorize", authorize(grades=["95", "95"]), "invalid"),
    Case("nozzle 16", "authorize", authorize(nozzles=[16]), "invalid"),
    Case("the same nozzle twice", "authorize", authorize(nozzles=[1, 1]), "invalid"),
    Case("payment_method null", "authorize", authorize(payment_method=None), "invalid"),
    Case(
        "order expires before it is issued",
        "authorize",
        authorize(expires_at="2026-11-24T10:19:00.000Z"),
        "invalid",
        RELATION,
    ),
    Case(
        "order expired",
        "authorize",
        authorize(expires_at="2026-11-24T10:19:59.000Z")
        | {"issued_at": "2026-11-24T10:19:00.000Z"},
        "expired",
        TIME,
    ),
    # --- cancel, stop, prices, clear
    Case("cancel without order_id", "cancel", command("cancel", data={}), "invalid"),
    Case(
        "stop with an extra field",
        "stop",
        command("stop", data={"pump": 3, "now": True}),
        "invalid",
    ),
    Case(
        "prices: none",
        "prices",
        command("prices", data=VALID_COMMAND_DATA["prices"] | {"prices": []}),
        "invalid",
    ),
    Case(
        "prices: float price",
        "prices",
        command(
            "prices",
            data=VALID_COMMAND_DATA["prices"] | {"prices": [{"grade": "95", "unit_price": 7.58}]},
        ),
        "invalid",
    ),
    Case(
        "prices: zero price",
        "prices",
        command(
            "prices",
            data=VALID_COMMAND_DATA["prices"] | {"prices": [{"grade": "95", "unit_price": "0"}]},
        ),
        "invalid",
    ),
    Case(
        "prices: without currency",
        "prices",
        command(
            "prices",
            data={k: v for k, v in VALID_COMMAND_DATA["prices"].items() if k != "currency"},
        ),
        "invalid",
    ),
    Case(
        "prices: the same entry twice",
        "prices",
        command(
            "prices",
            data=VALID_COMMAND_DATA["prices"]
            | {"prices": [{"grade": "95", "unit_price": "7.58"}] * 2},
        ),
        "invalid",
    ),
    Case(
        "prices: one grade at two prices",
        "prices",
        command(
            "prices",
            data=VALID_COMMAND_DATA["prices"]
            | {
                "prices": [
                    {"grade": "95", "unit_price": "7.58"},
                    {"grade": "95", "unit_price": "7.60"},
                ]
            },
        ),
        "invalid",
        "uniqueness of one field of array items",
    ),
    Case(
        "prices: extra field in a price",
        "prices",
        command(
            "prices",
            data=VALID_COMMAND_DATA["prices"]
            | {"prices": [{"grade": "95", "unit_price": "7.58", "vat": "13"}]},
        ),
        "invalid",
    ),
    Case(
        "clear: both ids",
        "clear",
        command("clear", data={"order_id": "o-1", "sale_id": 1}),
        "invalid",
    ),
    Case("clear: neither id", "clear", command("clear", data={}), "invalid"),
    Case("clear: sale_id 0", "clear", command("clear", data={"sale_id": 0}), "invalid"),
    Case(
        "clear: sale_id as a string", "clear", command("clear", data={"sale_id": "412"}), "invalid"
    ),
]


def _parse(payload: bytes, command_type: str) -> Command:
    return contract.parse_command(
        payload, command_type=command_type, station=STATION, now=NOW, clock_skew_s=SKEW_S
    )


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_parse_command(case: Case) -> None:
    payload = json.dumps(case.message).encode()
    if case.code is None:
        parsed = _parse(payload, case.type)
        assert parsed.type == case.type
        assert parsed.cmd_id == case.message["cmd_id"]
        assert parsed.raw == case.message
        return
    with pytest.raises(ContractError) as caught:
        _parse(payload, case.type)
    assert caught.value.code == case.code, str(caught.value)
    cmd_id = case.message.get("cmd_id")
    valid_id = isinstance(cmd_id, str) and 1 <= len(cmd_id) <= 128 and " " not in cmd_id
    assert caught.value.cmd_id == (cmd_id if valid_id else None)
    assert_answerable(caught.value, case.type)


def assert_answerable(error: ContractError, command_type: str) -> None:
    """Every refusal can be answered with a result that meets the contract."""
    result = contract.rejection_data(error, command_type)
    assert (result["status"], result["code"], result["cmd_id"]) == (
        "rejected",
        error.code,
        error.cmd_id,
    )
    assert schema_errors("result", _wrap("result", result)) == []


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_command_schema_agrees_with_parse_command(case: Case) -> None:
    schema_valid = not schema_errors(f"cmd-{case.type}", case.message)
    code_valid = case.code is None
    if case.beyond_schema:
        # Documented disagreements only: the schema cannot see this rule.
        assert schema_valid != code_valid, case.beyond_schema
    else:
        assert schema_valid == code_valid


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe{}",  # not UTF-8
        b"[]",
        b'"authorize"',
        b"null",
        b'{"pump": NaN}',
        b'{"cmd_id": "a", "cmd_id": "b"}',  # the same key twice
        b"[" * 100_000,
        b" " * (contract.MAX_COMMAND_BYTES + 1),
    ],
    ids=[
        "empty",
        "truncated",
        "text",
        "utf-16",
        "array",
        "string",
        "null",
        "NaN",
        "duplicate key",
        "deep",
        "too large",
    ],
)
def test_parse_command_refuses_what_is_not_a_json_object(payload: bytes) -> None:
    with pytest.raises(ContractError) as caught:
        _parse(payload, "authorize")
    assert caught.value.code == "invalid"
    assert caught.value.cmd_id is None
    assert_answerable(caught.value, "authorize")


def test_duplicate_keys_are_refused_even_in_a_valid_command() -> None:
    text = json.dumps(command("stop"))
    payload = text.replace('"data": {"pump": 3}', '"data": {"pump": 3, "pump": 4}').encode()
    assert payload != text.encode()
    with pytest.raises(ContractError) as caught:
        _parse(payload, "stop")
    assert caught.value.code == "invalid"


def test_an_unknown_command_type_is_invalid_and_names_the_command() -> None:
    message = command("stop", schema="edgectl/v1/cmd/reboot")
    with pytest.raises(ContractError) as caught:
        _parse(json.dumps(message).encode(), "reboot")
    assert (caught.value.code, caught.value.cmd_id) == ("invalid", "c-20261124-000123")
    assert contract.rejection_data(caught.value, "reboot")["type"] is None
    assert_answerable(caught.value, "reboot")


@pytest.mark.parametrize(
    ("command_type", "message", "problem"),
    [
        ("stop", command("stop", schema="x" * 60_000), "schema: must be"),
        ("stop", command("stop", schema="edgectl/v9/" + "x" * 60_000), "not a version"),
        ("stop", command("stop", **{f"f_{'x' * 500}_{i}": 1 for i in range(100)}), "unknown"),
        ("authorize", authorize(preset={"type": "amount", "value": 10**4000}), "the number"),
        ("authorize", authorize(preset={"type": "amount", "value": "9" * 60_000}), "decimal"),
    ],
    ids=["long schema", "long version", "many long unknown fields", "huge number", "long text"],
)
def test_refusals_of_huge_values_stay_short(command_type: str, message: Json, problem: str) -> None:
    payload = json.dumps(message).encode()
    assert len(payload) <= contract.MAX_COMMAND_BYTES
    with pytest.raises(ContractError, match=problem) as caught:
        _parse(payload, command_type)
    assert len(str(caught.value)) < 300
    assert_answerable(caught.value, command_type)


def test_checks_come_in_the_documented_order() -> None:
    # Wrong station and expired: wrong_station. Invalid data and expired: invalid.
    late = {"issued_at": "2026-11-24T10:00:00.000Z", "expires_at": "2026-11-24T10:01:00.000Z"}
    both = command("stop", station="SH-PD-0018") | late
    with pytest.raises(ContractError, match="station") as caught:
        _parse(json.dumps(both).encode(), "stop")
    assert caught.value.code == "wrong_station"
    broken = command("stop", data={"pump": 0}) | late
    with pytest.raises(ContractError) as caught:
        _parse(json.dumps(broken).encode(), "stop")
    assert caught.value.code == "invalid"


def test_time_can_be_checked_after_the_inbox() -> None:
    late = command(
        "stop", issued_at="2026-11-24T10:00:00.000Z", expires_at="2026-11-24T10:01:00.000Z"
    )
    payload = json.dumps(late).encode()
    parsed = contract.parse_command(
        payload, command_type="stop", station=STATION, now=None, clock_skew_s=SKEW_S
    )
    with pytest.raises(ContractError) as caught:
        contract.check_time(parsed, now=NOW, clock_skew_s=SKEW_S)
    assert (caught.value.code, caught.value.cmd_id) == ("expired", parsed.cmd_id)
    contract.check_time(parsed, now=NOW - timedelta(minutes=20), clock_skew_s=SKEW_S)
    with pytest.raises(ContractError, match="in the future") as caught:
        contract.check_time(parsed, now=NOW - timedelta(minutes=22), clock_skew_s=SKEW_S)
    assert caught.value.code == "not_yet_valid"
    # Without a clock, the station is still checked.
    with pytest.raises(ContractError) as caught:
        contract.parse_command(
            json.dumps(command("stop", station="SH-PD-0018")).encode(),
            command_type="stop",
            station=STATION,
            now=None,
            clock_skew_s=SKEW_S,
        )
    assert caught.value.code == "wrong_station"


def test_a_contract_error_is_a_cloud_error_with_a_result_code() -> None:
    error = ContractError("x", code="expired", cmd_id="c-1")
    assert isinstance(error, CloudError)
    assert (error.code, error.cmd_id) == ("expired", "c-1")
    with pytest.raises(ValueError):
        ContractError("x", code="not-a-code")


def test_parse_command_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError):
        contract.parse_command(
            json.dumps(command("stop")).encode(),
            command_type="stop",
            station=STATION,
            now=datetime(2026, 11, 24, 10, 20, 30),
            clock_skew_s=SKEW_S,
        )


def test_parsed_authorize() -> None:
    parsed = _parse(json.dumps(command("authorize")).encode(), "authorize")
    assert parsed.issued_at == datetime(2026, 11, 24, 10, 20, tzinfo=UTC)
    assert parsed.expires_at == datetime(2026, 11, 24, 10, 21, tzinfo=UTC)
    assert (parsed.key_id, parsed.sig) == ("cloud-2026a", SIG)
    assert parsed.data == AuthorizeData(
        order_id="o-88812",
        pump=3,
        preset_type="amount",
        preset_value=Decimal("200.00"),
        currency="CNY",
        grades=("95",),
        nozzles=(2,),
        payment_method="wechat",
        expires_at=datetime(2026, 11, 24, 10, 25, tzinfo=UTC),
    )
    assert str(parsed.data.preset_value) == "200.00"  # kept as sent, never via float


ROUND_TRIP: list[CommandData] = [
    AuthorizeData("o-1", 1, "volume", Decimal("30.5"), "EUR"),
    AuthorizeData(
        "o-2",
        99,
        "amount",
        Decimal("2000.00"),
        "CNY",
        ("92", "95"),
        (1, 15),
        "card",
        datetime(2026, 11, 24, 10, 30, tzinfo=UTC),
    ),
    CancelData("o-1"),
    StopData(7),
    PricesData("ps-1", "CNY", PRICES),
    PricesData("ps-2", "CNY", PRICES[:1], datetime(2026, 11, 25, tzinfo=UTC)),
    ClearData(order_id="o-1"),
    ClearData(sale_id=412),
    AckData("alarm", 0),
    ReplayData("reconciliation", 3, 9),
]


@pytest.mark.parametrize("data", ROUND_TRIP, ids=[type(d).__name__ for d in ROUND_TRIP])
def test_command_envelope_round_trips_through_parse_command(data: CommandData) -> None:
    message = contract.command_envelope(
        data,
        cmd_id="c-1",
        station=STATION,
        issued_at=NOW - timedelta(seconds=5),
        expires_at=NOW + timedelta(minutes=1),
        key_id="cloud-2026a",
    )
    parsed = _parse(contract.encode(message), message["schema"].rsplit("/", 1)[1])
    assert parsed.data == data
    assert (parsed.key_id, parsed.sig) == ("cloud-2026a", None)
    assert schema_errors(f"cmd-{parsed.type}", message | {"sig": SIG}) == []


# --------------------------------------------------------------------------- docs/mqtt.md

DOC = SCHEMAS.parent / "mqtt.md"
_EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[a-z_-]+)(?P<part> data)? -->\n```json\n(?P<body>.*?)\n```", re.S
)


def _doc_examples() -> list[tuple[str, bool, str]]:
    text = DOC.read_text("utf-8")
    return [(m["name"], bool(m["part"]), m["body"]) for m in _EXAMPLE.finditer(text)]


def test_every_json_block_of_the_doc_is_a_checked_example_or_a_sketch() -> None:
    blocks = re.findall(r"```json\n(.*?)\n```", DOC.read_text("utf-8"), re.S)
    sketches = [block for block in blocks if "…" in block]
    assert len(blocks) == len(sketches) + len(_doc_examples())


def test_the_doc_has_an_example_of_every_message() -> None:
    names = {name for name, _, _ in _doc_examples()}
    assert names == set(_schemas()) - {"common"}


@pytest.mark.parametrize(
    ("name", "is_data", "body"),
    _doc_examples(),
    ids=[f"{name}{' data' if is_data else ''}" for name, is_data, _ in _doc_examples()],
)
def test_doc_example_is_valid(name: str, is_data: bool, body: str) -> None:
    message: Json
    if name.startswith("cmd-"):
        command_type = name.removeprefix("cmd-")
        message = command(command_type, data=_data_of(body)) if is_data else json.loads(body)
        assert schema_errors(name, message) == []
        assert _parse(json.dumps(message).encode(), command_type).type == command_type
        return
    message = _wrap(name, _data_of(body)) if is_data else json.loads(body)
    assert schema_errors(name, message) == []
    # A whole message shows the msg_id the station would really give it.
    rebuilt = contract.envelope(
        name,
        message["station"],
        message["seq"],
        message["ts"],
        message["data"],
        version=message["version"],
    )
    assert rebuilt == message


def _data_of(body: str) -> Json:
    data: Json = json.loads("{" + body + "}")["data"]
    return data


# --------------------------------------------------------------------------- found by fuzzing


@pytest.mark.parametrize("now", [NOW, datetime(9999, 12, 31, 12, tzinfo=UTC)])
def test_a_window_at_the_end_of_time_is_checked_not_overflowed(now: datetime) -> None:
    # expires_at + clock skew is past datetime.max: check_time raised OverflowError, so a
    # signed command from a broken cloud clock failed the handler on every delivery.
    message = command(
        "authorize",
        issued_at="9999-12-31T00:00:00.000Z",
        expires_at="9999-12-31T23:59:59.999Z",
    )
    message["data"]["expires_at"] = "9999-12-31T23:59:59.999999Z"
    payload = json.dumps(message).encode()
    if now == NOW:
        with pytest.raises(ContractError) as caught:
            _parse(payload, "authorize")
        assert caught.value.code == "not_yet_valid"
    else:
        parsed = contract.parse_command(
            payload, command_type="authorize", station=STATION, now=now, clock_skew_s=3600
        )
        contract.check_time(parsed, now=now, clock_skew_s=3600)


def test_a_window_at_the_start_of_time_is_checked_not_overflowed() -> None:
    message = command(
        "stop", issued_at="0001-01-01T00:00:00.000Z", expires_at="0001-01-01T00:01:00.000Z"
    )
    parsed = contract.parse_command(
        json.dumps(message).encode(),
        command_type="stop",
        station=STATION,
        now=None,
        clock_skew_s=SKEW_S,
    )
    contract.check_time(parsed, now=datetime.min.replace(tzinfo=UTC), clock_skew_s=3600)
    with pytest.raises(ContractError) as caught:
        contract.check_time(parsed, now=NOW, clock_skew_s=3600)
    assert caught.value.code == "expired"


@pytest.mark.parametrize("skew", [math.nan, math.inf, -1.0, 1e20])
def test_check_time_refuses_a_skew_that_is_not_a_duration(skew: float) -> None:
    parsed = _parse(json.dumps(command("stop")).encode(), "stop")
    with pytest.raises(ValueError):
        contract.check_time(parsed, now=NOW, clock_skew_s=skew)


@pytest.mark.parametrize(
    ("command_type", "data"),
    [
        (
            "prices",
            VALID_COMMAND_DATA["prices"] | {"prices": [{"grade": "\ud800", "unit_price": "7.58"}]},
        ),
        ("authorize", VALID_COMMAND_DATA["authorize"] | {"grades": ["9\udfff"]}),
    ],
)
def test_a_grade_with_a_lone_surrogate_is_invalid(command_type: str, data: Json) -> None:
    # JSON's "\ud800" decodes to a str that UTF-8 cannot encode: the station could neither
    # store nor publish the grade (contract.encode raised UnicodeEncodeError).
    payload = json.dumps(command(command_type, data=data)).encode()
    with pytest.raises(ContractError) as caught:
        _parse(payload, command_type)
    assert caught.value.code == "invalid"
    assert_answerable(caught.value, command_type)


@pytest.mark.parametrize("value", [10**4300, -(10**5000)], ids=["10**4300", "-10**5000"])
def test_parse_decimal_shows_a_huge_number_without_raising(value: int) -> None:
    with pytest.raises(ContractError, match="not the number"):  # was ValueError from repr()
        contract.parse_decimal(value, "data.preset.value")


@pytest.mark.parametrize(
    "data",
    [{"text": "\ud800"}, {"n": 10**4300}, {"n": 2**64}, {"\udfff": 1}],
    ids=["surrogate", "10**4300", "2**64", "surrogate key"],
)
def test_encode_refuses_what_json_cannot_carry(data: Json) -> None:
    with pytest.raises(ContractError):  # was UnicodeEncodeError / ValueError
        contract.encode(data)
