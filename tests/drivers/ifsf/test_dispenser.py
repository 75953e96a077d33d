"""The simulated IFSF dispenser node (drivers/ifsf/dispenser.py): its state machines walked
pair by pair, its answers to the facts file's §9 requests byte for byte, sales through the
transaction buffer, refusals, dialects, and properties over random use."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from drivers.ifsf import codec
from drivers.ifsf import databases as db
from drivers.ifsf.codec import Ack, Answer, Message, Read, Unsolicited, Write
from drivers.ifsf.dispenser import (
    FP_COMMANDS,
    FP_TRANSITIONS,
    PETROCHINA,
    SINOPEC,
    TR_TRANSITIONS,
    Customer,
    CustomerError,
    Dialect,
    Dispenser,
    DispenserError,
    DispenserSpec,
    Fill,
    FpEvent,
    FpSpec,
    FpState,
    HangUp,
    IllegalTransaction,
    IllegalTransition,
    Lift,
    NozzleSpec,
    ProductSpec,
    RandomCustomers,
    TrCommand,
    TrState,
    WalkAway,
    dit_layout,
    fp_next,
    normal_fill,
    tr_next,
)
from drivers.ifsf.encodings import Lna
from tests.drivers.ifsf import strategies

CD = Lna(2, 1)
OTHER_CD = Lna(2, 2)
FP1 = db.FuellingPoint(1)
PRODUCTS = (
    ProductSpec(8, "92", {1: Decimal("4.90")}),
    ProductSpec(9, "95", {1: Decimal("5.20")}),
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


NODE = Lna(1, 3)


def node(lna: Lna = NODE, fps: int = 1, **kw: Any) -> Dispenser:
    spec = DispenserSpec(
        lna,
        tuple(FpSpec((NozzleSpec(1), NozzleSpec(2))) for _ in range(fps)),
        PRODUCTS,
        **kw,
    )
    return Dispenser(spec)


class Cd:
    """A controller talking to one model: tokens, sends, and what came back."""

    def __init__(self, dispenser: Dispenser, lna: Lna = CD, *, register: bool = True) -> None:
        self.d = dispenser
        self.lna = lna
        self.token = 0
        self.now = 0.0
        self.unsolicited: list[Message] = []
        if register:
            self.write(db.COM_SV, (0x0B, lna))

    def send(self, address: db.Address, body: codec.Body) -> list[Message]:
        self.token = self.token % 31 + 1
        out = self.d.receive(Message(self.d.lna, self.lna, self.token, address, body), self.now)
        self.unsolicited += [m for m in out if isinstance(m.body, Unsolicited)]
        return [m for m in out if not isinstance(m.body, Unsolicited)]

    def write(self, address: db.Address, *items: tuple[int, Any] | tuple[int]) -> Ack:
        body = Write(tuple(codec.item(address, *item) for item in items))
        (ack,) = self.send(address, body)
        assert isinstance(ack.body, Ack)
        return ack.body

    def read(self, address: db.Address, *data_ids: int) -> dict[int, Any]:
        (answer,) = self.send(address, Read(data_ids))
        assert isinstance(answer.body, Answer), answer
        return {i.data_id: db.decode_value(address, i.data_id, i.data) for i in answer.body.items}

    def state(self, fp: int = 1) -> FpState:
        return FpState(self.read(db.FuellingPoint(fp), 0x14)[0x14])

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.unsolicited += self.d.tick(self.now)

    def statuses(self) -> list[int]:
        """The FP states the unsolicited status messages reported, in order."""
        found = []
        for m in self.unsolicited:
            assert isinstance(m.body, Unsolicited)
            items = {i.data_id: i.data for i in m.body.items}
            if isinstance(m.database, db.FuellingPoint) and 0x64 in items:
                found.append(items[0x14][0])
        return found


def authorise(
    cd: Cd, *, amount: str | None = None, volume: str | None = None, mask: int = 0x01
) -> Ack:
    items: list[tuple[int, Any] | tuple[int]] = []
    if amount is not None:
        items.append((0x1B, Decimal(amount)))
    if volume is not None:
        items.append((0x1C, Decimal(volume)))
    items += [(0x19, mask), (0x1E, cd.lna), (0x3E,)]
    return cd.write(FP1, *items)


def fill(cd: Cd, steps: list[Any], *, seconds: float = 600.0) -> Customer:
    customer = Customer(cd.d, 1, steps, cd.now)
    while not customer.done and seconds > 0:
        cd.now += 0.25
        seconds -= 0.25
        cd.unsolicited += customer.tick(cd.now)
    return customer


# ======================================================================================
# The state machines, pair by pair
# ======================================================================================
@pytest.mark.parametrize(("pair", "target"), sorted(FP_TRANSITIONS.items(), key=str))
def test_every_legal_fp_transition(pair: tuple[FpState, FpEvent], target: FpState) -> None:
    assert fp_next(*pair) is target


ILLEGAL_FP = [(s, e) for s in FpState for e in FpEvent if (s, e) not in FP_TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL_FP)
def test_every_illegal_fp_pair_raises(state: FpState, event: FpEvent) -> None:
    with pytest.raises(IllegalTransition) as caught:
        fp_next(state, event)
    assert (caught.value.state, caught.value.event) == (state, event)
    assert isinstance(caught.value, DispenserError)


def test_the_commands_allowed_per_state_are_the_facts() -> None:
    """ifsf-over-ip.md §6: Open only in 2; Close 3-9; Release 3-5; Terminate 4-9; Suspend
    6 or 8; Resume 7 or 9; Clear_Display 3-5."""
    allowed = {
        FpEvent.OPEN: {2},
        FpEvent.CLOSE: set(range(3, 10)),
        FpEvent.RELEASE: {3, 4, 5},
        FpEvent.TERMINATE: set(range(4, 10)),
        FpEvent.SUSPEND: {6, 8},
        FpEvent.RESUME: {7, 9},
        FpEvent.CLEAR_DISPLAY: {3, 4, 5},
    }
    for event, states in allowed.items():
        assert {s.value for s in FpState if (s, event) in FP_TRANSITIONS} == states, event


@pytest.mark.parametrize(
    ("events", "end"),
    [
        ((FpEvent.OPEN, FpEvent.LIFT, FpEvent.RELEASE, FpEvent.FLOW, FpEvent.HANG_UP), 3),
        ((FpEvent.OPEN, FpEvent.RELEASE, FpEvent.LIFT, FpEvent.FLOW, FpEvent.FILL_END), 3),
        ((FpEvent.OPEN, FpEvent.RELEASE, FpEvent.LIFT, FpEvent.SUSPEND, FpEvent.RESUME), 6),
        ((FpEvent.OPEN, FpEvent.RELEASE, FpEvent.LIFT, FpEvent.FLOW, FpEvent.SUSPEND), 9),
        ((FpEvent.OPEN, FpEvent.RELEASE, FpEvent.TERMINATE, FpEvent.CLOSE), 2),
        ((FpEvent.OPEN, FpEvent.RELEASE, FpEvent.AUTH_TIMEOUT), 3),
        ((FpEvent.OPEN, FpEvent.LIFT, FpEvent.TERMINATE, FpEvent.HANG_UP), 3),
        ((FpEvent.FAULT, FpEvent.RECOVER, FpEvent.OPEN), 3),
    ],
)
def test_legal_paths(events: tuple[FpEvent, ...], end: int) -> None:
    state = FpState.CLOSED
    for event in events:
        state = fp_next(state, event)
    assert state == end


@pytest.mark.parametrize(("pair", "target"), sorted(TR_TRANSITIONS.items(), key=str))
def test_every_legal_tr_transition(pair: tuple[TrState, TrCommand], target: TrState) -> None:
    assert tr_next(*pair) is target


@pytest.mark.parametrize(
    ("state", "command"),
    [(s, c) for s in TrState for c in TrCommand if (s, c) not in TR_TRANSITIONS],
)
def test_every_illegal_tr_pair_raises(state: TrState, command: TrCommand) -> None:
    with pytest.raises(IllegalTransaction):
        tr_next(state, command)


# The model brought into each FP state the way a CD and a customer would.
def _in_state(state: FpState) -> Cd:
    cd = Cd(node())
    d = cd.d
    if state is FpState.INOPERATIVE:
        cd.unsolicited += d.fault(1, 0x01, cd.now)
        return cd
    if state is FpState.CLOSED:
        return cd
    cd.write(FP1, (0x3C,))
    if state is FpState.CALLING:
        d.lift(1, 1, cd.now)
    elif state is not FpState.IDLE:
        cd.write(FP1, (0x3E,))
        if state is not FpState.AUTHORISED:
            d.lift(1, 1, cd.now)
            if state in (FpState.FUELLING, FpState.SUSPENDED_FUELLING):
                d.squeeze(1, cd.now)
                cd.tick(1.0)
            if state in (FpState.SUSPENDED_STARTED, FpState.SUSPENDED_FUELLING):
                cd.write(FP1, (0x40,))
    assert cd.state() is state
    return cd


@pytest.mark.parametrize("state", list(FpState))
@pytest.mark.parametrize("data_id", sorted(FP_COMMANDS))
def test_every_command_in_every_state_over_the_wire(state: FpState, data_id: int) -> None:
    """A command the table allows is acked 0 and moves the FP where the table says; any
    other is refused with MS_ACK 5 and Data_Ack 3 and changes nothing."""
    cd = _in_state(state)
    event = FP_COMMANDS[data_id]
    ack = cd.write(FP1, (data_id,))
    target = FP_TRANSITIONS.get((state, event))
    if target is None:
        assert (ack.status, [(a.data_id, a.code) for a in ack.data_acks]) == (5, [(data_id, 3)])
        assert cd.state() is state
    else:
        assert ack.status == 0
        assert cd.state() is target


# ======================================================================================
# Golden: the answers to ifsf-over-ip.md §9's requests
# ======================================================================================
def _wire(d: Dispenser, request: str, now: float = 0.0) -> list[str]:
    out = d.receive(codec.decode_message(h(request)), now)
    return [codec.encode(m).hex(" ").upper() for m in out]


def test_e2_read_fp_state_of_a_closed_fp() -> None:
    d = node(Lna(1, 3))
    assert _wire(d, "01 03 02 01 00 1E 00 03 01 21 14") == [
        "02 01 01 03 00 3E 00 05 01 21 14 01 02"
    ]


def test_e2_zhang_answer_idle() -> None:
    d = node(Lna(1, 2), start_state=FpState.IDLE)
    assert _wire(d, "01 02 02 01 00 09 00 03 01 21 14") == [
        "02 01 01 02 00 29 00 05 01 21 14 01 03"
    ]


def test_e3_authorise_accepted() -> None:
    d = node(Lna(1, 4), start_state=FpState.IDLE)
    request = "01 04 02 01 00 51 00 12 01 21 1B 05 06 00 99 00 00 19 01 01 1E 02 02 01 3E 00"
    assert _wire(d, request) == ["02 01 01 04 00 F1 00 03 01 21 00"]
    assert d.fps[1].state is FpState.AUTHORISED
    assert d.fps[1].authorised_amount == Decimal("9900.00")


def test_e3_authorise_refused_in_a_closed_fp() -> None:
    d = node(Lna(1, 3))
    request = "01 03 02 01 00 4C 00 12 01 21 1B 05 05 00 10 00 00 1E 02 02 01 19 01 01 3E 00"
    assert _wire(d, request) == ["02 01 01 03 00 EC 00 0B 01 21 05 1B 00 1E 00 19 00 3E 03"]


def test_e4_unsolicited_status_started_with_fp_alarm() -> None:
    d = node(Lna(1, 3), start_state=FpState.IDLE, dialect=PETROCHINA, recipients=(CD,))
    d.receive(codec.decode_message(h("01 03 02 01 00 41 00 05 01 21 19 01 01")), 0.0)
    d.receive(codec.decode_message(h("01 03 02 01 00 42 00 04 01 21 3E 00")), 0.0)
    (status,) = d.lift(1, 1, 1.0)
    assert codec.encode(status) == h(
        "02 01 01 03 00 80 00 18 01 21 64 00 14 01 06 15 01 01 16 02 00 00 50 08"
    ) + bytes(8)


def test_e7_price_change_acked_then_error_99h_reported() -> None:
    products = (ProductSpec(8, "92", {1: Decimal("4.50")}),)
    spec = DispenserSpec(
        Lna(1, 1), (FpSpec((NozzleSpec(1),)),), products, dialect=PETROCHINA, recipients=(CD,)
    )
    d = Dispenser(spec)
    request = "01 01 02 01 00 43 00 0D 06 61 00 00 00 08 11 02 04 04 00 04 90"
    assert _wire(d, request) == [
        "02 01 01 01 00 E3 00 08 06 61 00 00 00 08 11 00",
        "02 01 01 01 00 80 00 0C 03 21 41 99 64 00 01 01 99 05 01 02",
    ]
    assert d.price(1) == Decimal("4.90")


def test_e9_add_recipient_and_read_heartbeat_interval() -> None:
    d = node(Lna(1, 3))
    assert _wire(d, "01 03 02 01 02 4B 00 06 01 00 0B 02 02 01") == [
        "02 01 01 03 00 EB 00 03 01 00 00"
    ]
    assert d.recipients == [CD]
    assert _wire(d, "01 03 02 01 02 01 00 03 01 00 04") == [
        "02 01 01 03 00 21 00 05 01 00 04 01 0A"
    ]


def test_generic_dialect_sends_the_short_status_message() -> None:
    d = node(start_state=FpState.IDLE, recipients=(CD,))
    (status,) = d.lift(1, 2, 0.0)
    assert codec.encode(status) == h(
        "02 01 01 03 00 80 00 0E 01 21 64 00 14 01 04 15 01 02 16 02 00 00"
    )


# ======================================================================================
# Sales
# ======================================================================================
def test_a_pre_authorised_amount_sale_read_locked_and_cleared() -> None:
    cd = Cd(node())
    assert cd.write(FP1, (0x3C,)).status == 0
    assert authorise(cd, amount="10.00").status == 0
    customer = fill(cd, normal_fill(1, rate_lps=Decimal("0.5")))
    assert customer.outcome == "done"
    assert cd.statuses() == [3, 5, 6, 8, 3, 3]  # the last: the nozzle back in its holster
    (sale,) = cd.d.fps[1].transactions.values()
    assert (sale.seq, sale.state, sale.amount, sale.volume) == (
        1,
        TrState.PAYABLE,
        Decimal("10.00"),
        Decimal("2.04"),
    )
    # The TR_Buff_Status_Message of the stored sale.
    tr_messages = [m for m in cd.unsolicited if isinstance(m.database, db.TransactionBuffer)]
    assert codec.encode(tr_messages[0])[8:] == h(
        "04 21 21 00 01 64 00 01 02 00 01 15 01 02 14 02 02 01"
        "05 05 06 00 00 10 00 06 05 06 00 00 02 04"
    )
    # Read every unpaid sale: one answer per sale, then an ack on the wildcard address.
    every = db.TransactionBuffer(1, 0, every=True)
    answer, end = cd.send(every, Read((0x01, 0x05, 0x06, 0x15)))
    assert answer.database == db.TransactionBuffer(1, 1)
    assert isinstance(end.body, Ack) and end.body.status == 0 and end.database == every
    tr = db.TransactionBuffer(1, 1)
    assert cd.write(tr, (0x1F,)).status == 0
    assert cd.read(tr, 0x15, 0x14) == {0x15: 3, 0x14: CD}
    assert cd.write(tr, (0x1E,)).status == 0
    assert cd.read(tr, 0x15)[0x15] == 1  # kept as history
    (end,) = cd.send(every, Read((0x01,)))
    assert isinstance(end.body, Ack) and end.body.status == 0
    totals = cd.read(db.LogicalNozzle(1, 1), 0x14, 0x15, 0x16)
    assert totals == {0x14: Decimal("2.04"), 0x15: Decimal("10.00"), 0x16: Decimal(1)}
    assert cd.read(db.Meter(1), 0x14) == {0x14: Decimal("2.04")}


def test_a_volume_preset_stops_exactly_and_running_messages_are_paced() -> None:
    cd = Cd(node(running_frequency=2))
    cd.write(FP1, (0x3C,))
    authorise(cd, volume="3.00", mask=0b10)
    fill(cd, [Lift(2), Fill(rate_lps=Decimal("0.25")), HangUp()])
    (sale,) = cd.d.fps[1].transactions.values()
    assert (sale.volume, sale.amount, sale.nozzle) == (Decimal("3.00"), Decimal("15.60"), 2)
    running = [
        m
        for m in cd.unsolicited
        if isinstance(m.body, Unsolicited) and m.body.items[0].data_id == 0x66
    ]
    # 12 s of flow, one message every 2 s.
    assert 5 <= len(running) <= 7


def test_a_post_paid_sale_released_while_calling_ends_on_hang_up() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    cd.d.lift(1, 1, cd.now)
    assert cd.state() is FpState.CALLING
    assert authorise(cd).status == 0
    assert cd.state() is FpState.STARTED
    cd.d.squeeze(1, cd.now, stop_amount=Decimal("4.90"))
    cd.tick(30)
    assert cd.state() is FpState.FUELLING  # the hand let go; the nozzle is still out
    cd.d.hang_up(1, cd.now)
    (sale,) = cd.d.fps[1].transactions.values()
    assert (sale.amount, sale.volume) == (Decimal("4.90"), Decimal("1.00"))


def test_the_unpaid_limit_refuses_a_release() -> None:
    cd = Cd(node(unpaid_limit=2))
    cd.write(FP1, (0x3C,))
    for _ in range(2):
        authorise(cd, amount="5.00")
        fill(cd, normal_fill(1))
    ack = authorise(cd, amount="5.00")
    assert ack.status == 5
    assert [(a.data_id, a.code) for a in ack.data_acks][-1] == (0x3E, 6)
    assert cd.state() is FpState.IDLE
    cd.write(db.TransactionBuffer(1, 1), (0x1E,))
    assert authorise(cd, amount="5.00").status == 0


def test_lock_rules_already_locked_and_wrong_state() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    authorise(cd, amount="5.00")
    fill(cd, normal_fill(1))
    tr = db.TransactionBuffer(1, 1)
    assert cd.write(tr, (0x1F,)).status == 0
    other = Cd(cd.d, OTHER_CD, register=False)
    assert other.write(tr, (0x1F,)).status == 9  # device already locked
    again = cd.write(tr, (0x1F,))
    assert (again.status, again.data_acks[0].code) == (5, 3)
    assert cd.write(tr, (0x20,)).status == 0  # unlock: Payable again
    assert cd.read(tr, 0x15)[0x15] == 2
    assert cd.write(tr, (0x1E,)).status == 0
    cleared = cd.write(tr, (0x1E,))
    assert (cleared.status, cleared.data_acks[0].code) == (5, 3)
    missing = cd.write(db.TransactionBuffer(1, 77), (0x1E,))
    assert missing.status == 6


def test_sinopec_unlock_leaves_the_sale_cleared() -> None:
    cd = Cd(node(dialect=Dialect(unlock_to_cleared=True)))
    cd.write(FP1, (0x3C,))
    authorise(cd, amount="5.00")
    fill(cd, normal_fill(1))
    tr = db.TransactionBuffer(1, 1)
    cd.write(tr, (0x1F,))
    cd.write(tr, (0x20,))
    assert cd.read(tr, 0x15)[0x15] == 1


def test_history_keeps_the_last_cleared_sales_and_seq_numbers_wrap() -> None:
    cd = Cd(node(history=2, unpaid_limit=1))
    cd.write(FP1, (0x3C,))
    cd.d.fps[1].last_seq = 9998
    seqs = []
    for _ in range(4):
        authorise(cd, amount="1.00")
        fill(cd, normal_fill(1))
        (seq,) = [t.seq for t in cd.d.fps[1].unpaid()]
        seqs.append(seq)
        cd.write(db.TransactionBuffer(1, seq), (0x1E,))
    assert seqs == [9999, 1, 2, 3]
    assert sorted(cd.d.fps[1].transactions) == [2, 3]


def test_terminate_mid_fill_stores_the_sale_and_ignores_the_nozzle_until_hung_up() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    authorise(cd)
    cd.d.lift(1, 1, cd.now)
    cd.d.squeeze(1, cd.now)
    cd.tick(5)
    assert cd.write(FP1, (0x3F,)).status == 0
    assert cd.state() is FpState.IDLE
    assert len(cd.d.fps[1].unpaid()) == 1
    authorise(cd)
    assert cd.state() is FpState.AUTHORISED  # the nozzle still out is not the new sale's
    cd.tick(5)
    assert cd.state() is FpState.AUTHORISED
    cd.d.hang_up(1, cd.now)
    cd.d.lift(1, 1, cd.now)
    assert cd.state() is FpState.STARTED


def test_a_nozzle_outside_the_mask_does_not_start() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    authorise(cd)  # mask: nozzle 1
    cd.d.lift(1, 2, cd.now)
    assert cd.state() is FpState.AUTHORISED
    assert cd.read(FP1, 0x15)[0x15] == 0b10


def test_release_while_calling_with_a_nozzle_outside_the_mask_is_refused() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    cd.d.lift(1, 2, cd.now)
    ack = authorise(cd)
    assert (ack.status, ack.data_acks[-1].code) == (5, 6)


def test_suspend_and_resume_stop_and_restart_the_flow() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    authorise(cd)
    cd.d.lift(1, 1, cd.now)
    cd.d.squeeze(1, cd.now, rate_lps=Decimal("1"))
    cd.tick(2)
    assert cd.write(FP1, (0x40,)).status == 0
    before = cd.d.fps[1].volume
    cd.tick(10)
    assert cd.d.fps[1].volume == before
    assert cd.read(FP1, 0x1F)[0x1F] == CD
    assert cd.write(FP1, (0x41,)).status == 0
    cd.tick(2)
    assert cd.d.fps[1].volume == before + 2


def test_authorisation_times_out() -> None:
    cd = Cd(node(max_auth_time=3))
    cd.write(FP1, (0x3C,))
    authorise(cd)
    cd.tick(29)
    assert cd.state() is FpState.AUTHORISED
    cd.tick(2)
    assert cd.state() is FpState.IDLE
    assert cd.read(db.ErrorEntry(1, 0x24), 0x01, 0x05) == {0x01: 0x24, 0x05: 5}


def test_pre_authorisation_forbidden_by_auth_state_mode() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    assert cd.write(db.C_DAT, (0x0B, 1)).status == 0
    assert authorise(cd).data_acks[-1].code == 3
    cd.d.lift(1, 1, cd.now)
    assert authorise(cd).status == 0


def test_a_fault_ends_the_sale_and_reports_the_error() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    authorise(cd)
    cd.d.lift(1, 1, cd.now)
    cd.d.squeeze(1, cd.now)
    cd.tick(3)
    cd.unsolicited += cd.d.fault(1, 0x22, cd.now)
    assert cd.state() is FpState.INOPERATIVE
    assert len(cd.d.fps[1].unpaid()) == 1
    assert cd.read(db.ErrorEntry(1, 0x22), 0x05) == {0x05: 8}
    cd.d.recover(1, cd.now)
    assert cd.state() is FpState.CLOSED


# ======================================================================================
# Databases, refusals
# ======================================================================================
def test_wrong_node_unknown_database_and_unknown_data() -> None:
    d = node(Lna(1, 3), fps=2)
    cd = Cd(d)
    (ack,) = d.receive(Message(Lna(1, 9), CD, 1, FP1, Read((0x14,))), 0.0)
    assert isinstance(ack.body, Ack) and ack.body.status == 1
    (ack,) = cd.send(db.FuellingPoint(3), Read((0x14,)))
    assert isinstance(ack.body, Ack) and ack.body.status == 6
    (ack,) = cd.send(db.UnknownDatabase(b"\xf0"), Read((0x01,)))
    assert isinstance(ack.body, Ack) and ack.body.status == 6
    (ack,) = cd.send(FP1, Read((0x77,)))
    assert isinstance(ack.body, Ack) and (ack.body.status, ack.body.data_acks[0].code) == (5, 4)
    bad = cd.write(FP1, (0x14, 3))
    assert (bad.status, bad.data_acks[0].code) == (5, 2)


def test_fp_wildcard_read_answers_every_fp_then_acks() -> None:
    cd = Cd(node(fps=3))
    out = cd.send(db.FuellingPoint(0), Read((0x14,)))
    assert [m.database for m in out] == [db.FuellingPoint(n) for n in (1, 2, 3, 0)]
    assert isinstance(out[-1].body, Ack) and out[-1].body.status == 0
    nozzles = cd.send(db.LogicalNozzle(2, 0), Read((0x01,)))
    assert [m.database for m in nozzles][:-1] == [db.LogicalNozzle(2, 1), db.LogicalNozzle(2, 2)]


def test_configuration_is_writable_only_while_closed() -> None:
    cd = Cd(node())
    assert cd.write(FP1, (0x02, 4)).status == 0
    cd.write(FP1, (0x3C,))
    refused = cd.write(FP1, (0x02, 3))
    assert (refused.status, refused.data_acks[0].code) == (5, 2)
    assert cd.read(FP1, 0x02)[0x02] == 4


def test_a_refusing_node_answers_busy() -> None:
    cd = Cd(node())
    cd.d.refuse(2)
    assert cd.write(FP1, (0x3C,)).status == 7
    assert cd.write(FP1, (0x3C,)).status == 7
    assert cd.write(FP1, (0x3C,)).status == 0


def test_no_unsolicited_data_before_a_cd_adds_itself() -> None:
    cd = Cd(node(), register=False)
    cd.write(FP1, (0x3C,))
    assert cd.unsolicited == []
    cd.write(db.COM_SV, (0x0B, CD))
    cd.write(FP1, (0x3D,))
    assert cd.statuses() == [2]
    cd.write(db.COM_SV, (0x0C, CD))
    cd.write(FP1, (0x3C,))
    assert cd.statuses() == [2]


def test_a_price_in_a_new_mode_of_a_known_product_is_taken() -> None:
    cd = Cd(node())
    assert cd.write(db.ProductPerMode(9, 2), (0x02, Decimal("5.35"))).status == 0
    assert cd.read(db.ProductPerMode(9, 2), 0x02) == {0x02: Decimal("5.35")}
    assert cd.write(FP1, (0x21, 2)).status == 0  # Fuelling_Mode 2
    assert cd.d.price(2, 2) == Decimal("5.35")
    assert cd.write(db.ProductPerMode(77, 1), (0x02, Decimal("1.00"))).status == 6


def test_presets_and_prices_the_display_cannot_show_are_invalid() -> None:
    cd = Cd(node())
    assert cd.write(FP1, (0x1B, Decimal("1.005"))).data_acks[0].code == 1
    assert cd.write(FP1, (0x1C, Decimal("12345678"))).data_acks[0].code == 1
    price = db.ProductPerMode(8, 1)
    assert cd.write(price, (0x02, Decimal("0"))).data_acks[0].code == 1


# ======================================================================================
# Dialects: offline sales, one node per nozzle
# ======================================================================================
@pytest.mark.parametrize(
    ("dialect", "end"),
    [(SINOPEC, db.TransactionBuffer(0, 0)), (PETROCHINA, db.TransactionBuffer(1, 0, every=True))],
)
def test_offline_sales_are_kept_read_and_removed(dialect: Dialect, end: db.Address) -> None:
    cd = Cd(node(dialect=dialect))
    cd.write(FP1, (0x3C,))
    cd.now = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC
    cd.d.set_cd_online(False)
    fill(cd, [Lift(1), Fill(volume=Decimal("2.00")), HangUp()])
    assert cd.d.fps[1].transactions == {}
    cd.d.set_cd_online(True)
    answer, end_of_list = cd.send(db.TransactionBuffer(0, 0), Read((0xC8,)))
    assert isinstance(answer.body, Answer)
    assert isinstance(end_of_list.body, Ack) and end_of_list.database == end
    address = answer.database
    assert isinstance(address, db.TransactionBuffer) and address.fp == 1
    values = {i.data_id: db.decode_value(address, i.data_id, i.data) for i in answer.body.items}
    assert values[0x06] == Decimal("2.00")
    assert values[0xCA] == "20251124"
    assert (values[0xCC], values[0xCD]) == (Decimal("0.00"), Decimal("2.00"))
    assert cd.write(address, (0xC9, b"")).status == 0
    (none_left,) = cd.send(db.TransactionBuffer(0, 0), Read((0xC8,)))
    assert isinstance(none_left.body, Ack) and none_left.database == end


def test_dit_layout_is_one_node_per_nozzle() -> None:
    nodes = dit_layout(9, [NozzleSpec(1), NozzleSpec(2), NozzleSpec(1)], PRODUCTS)
    assert [n.lna for n in nodes] == [Lna(1, 9), Lna(1, 10), Lna(1, 11)]
    assert all(len(n.fps) == 1 and len(n.fps[0].nozzles) == 1 for n in nodes)
    assert all(n.dialect is PETROCHINA for n in nodes)


# ======================================================================================
# Customers
# ======================================================================================
def test_a_customer_who_is_never_released_walks_away() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    customer = fill(cd, [Lift(1), Fill(amount=Decimal("5"), wait_s=10), HangUp()])
    assert customer.outcome == "not_authorized"
    assert cd.state() is FpState.IDLE
    assert cd.d.fps[1].nozzle_out is None


def test_walk_away_mid_fill_leaves_a_payable_sale() -> None:
    cd = Cd(node())
    cd.write(FP1, (0x3C,))
    authorise(cd)
    customer = Customer(cd.d, 1, [Lift(1), Fill()], cd.now)
    for _ in range(20):
        cd.now += 0.5
        customer.tick(cd.now)
    customer.steps = [WalkAway()]
    customer.tick(cd.now)
    assert customer.outcome == "walked_away"
    assert [t.state for t in cd.d.fps[1].transactions.values()] == [TrState.PAYABLE]


def test_customer_errors_are_typed() -> None:
    d = node(start_state=FpState.IDLE)
    with pytest.raises(CustomerError):
        d.hang_up(1, 0.0)
    d.lift(1, 1, 0.0)
    with pytest.raises(CustomerError):
        d.lift(1, 2, 0.0)
    with pytest.raises(CustomerError):
        d.lift(2, 1, 0.0)
    with pytest.raises(CustomerError):
        d.lift(1, 1, 0.0)


def test_random_customers_with_a_cd_that_releases_and_clears() -> None:
    """An hour of random customers at two FPs, a CD releasing every caller and clearing
    every sale: every sale is stored once and the totals add up."""
    cd = Cd(node(fps=2))
    cd.write(db.FuellingPoint(0), (0x3C,))
    people = RandomCustomers(cd.d, 0.0, mean_interval_s=30, seed=7)
    cleared = Decimal(0)
    while cd.now < 3600:
        cd.now += 0.5
        cd.unsolicited += people.tick(cd.now)
        for fp in cd.d.fps.values():
            if fp.state is FpState.CALLING:
                cd.write(db.FuellingPoint(fp.number), (0x3E,))
            for tr in fp.unpaid():
                cd.write(db.TransactionBuffer(fp.number, tr.seq), (0x1E,))
                cleared += tr.amount
    assert people.served > 20
    total = sum(n.amount_total for fp in cd.d.fps.values() for n in fp.nozzles.values())
    in_progress = sum(fp.amount for fp in cd.d.fps.values() if fp.state in (8, 9))
    assert total == cleared
    assert in_progress >= 0


# ======================================================================================
# Properties
# ======================================================================================
ADDRESSES = [
    db.COM_SV,
    db.C_DAT,
    FP1,
    db.FuellingPoint(0),
    db.LogicalNozzle(1, 1),
    db.TransactionBuffer(1, 1),
    db.TransactionBuffer(1, 2),
    db.TransactionBuffer(1, 0, every=True),
    db.Product(1),
    db.ProductPerMode(8, 1),
    db.Meter(1),
]
fp_commands = st.sampled_from(sorted(FP_COMMANDS)).map(lambda d: (FP1, d, None))
tr_commands = st.tuples(
    st.sampled_from([db.TransactionBuffer(1, s) for s in (1, 2, 3)]),
    st.sampled_from([0x1E, 0x1F, 0x20]),
    st.none(),
)
presets = st.tuples(
    st.just(FP1),
    st.sampled_from([0x1B, 0x1C]),
    st.decimals(min_value=0, max_value=200, places=2),
)
Op = tuple[str, Any]
ops: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("write"), st.one_of(fp_commands, tr_commands, presets)),
    st.tuples(st.just("lift"), st.integers(1, 2)),
    st.tuples(st.just("serve"), st.integers(1, 2)),  # release, lift, squeeze
    st.tuples(st.just("squeeze"), st.decimals(min_value="0.1", max_value=2, places=1)),
    st.tuples(st.just("let_go"), st.none()),
    st.tuples(st.just("hang_up"), st.none()),
    st.tuples(st.just("tick"), st.floats(0, 60)),
    st.tuples(st.just("fault"), st.none()),
    st.tuples(st.just("recover"), st.none()),
)


def _apply(cd: Cd, op: Op) -> None:
    kind, arg = op
    d, now = cd.d, cd.now
    try:
        if kind == "write":
            address, data_id, value = arg
            cd.write(address, (data_id,) if value is None else (data_id, value))
        elif kind == "tick":
            cd.tick(arg)
        elif kind == "serve":
            cd.write(FP1, (0x3E,))
            cd.unsolicited += d.lift(1, arg, now)
            cd.unsolicited += d.squeeze(1, now)
        else:
            actions: dict[str, Callable[[], list[Message]]] = {
                "lift": lambda: d.lift(1, arg, now),
                "squeeze": lambda: d.squeeze(1, now, rate_lps=arg),
                "let_go": lambda: d.let_go(1, now),
                "hang_up": lambda: d.hang_up(1, now),
                "fault": lambda: d.fault(1, 0x01, now),
                "recover": lambda: d.recover(1, now),
            }
            cd.unsolicited += actions[kind]()
    except DispenserError:
        pass  # typed: a customer who cannot, a transition that is not allowed


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_random_use_keeps_its_promises(sequence: list[Op]) -> None:
    """Random CD commands, customers and time: nothing but typed errors; totals only grow;
    every fill that delivered fuel leaves exactly one new Payable transaction."""
    cd = Cd(node(unpaid_limit=3, start_state=FpState.IDLE))
    fp = cd.d.fps[1]
    for op in sequence:
        totals = [(n.volume_total, n.amount_total) for n in fp.nozzles.values()]
        reported = len(cd.statuses())
        states = [int(fp.state)]
        before = dict(fp.transactions)
        _apply(cd, op)
        after = [(n.volume_total, n.amount_total) for n in fp.nozzles.values()]
        assert all(
            a >= b for pair in zip(after, totals, strict=True) for a, b in zip(*pair, strict=True)
        )
        # Fills that ended in this step, from the states the FP reported on the way.
        states += cd.statuses()[reported:]
        ended = sum(a in (8, 9) and b not in (8, 9) for a, b in itertools.pairwise(states))
        new = [t for seq, t in fp.transactions.items() if seq not in before]
        assert len(new) == ended
        assert all(t.state is TrState.PAYABLE and t.volume > 0 for t in new)
        if ended:
            note_event("a fill ended")
        assert len(fp.unpaid()) <= fp.unpaid_limit


@settings(max_examples=400, deadline=None)
@given(strategies.messages(), st.floats(0, 1e6))
def test_any_message_is_answered_never_raised(message: Message, now: float) -> None:
    d = node(Lna(1, 3), fps=2, start_state=FpState.IDLE, recipients=(CD,))
    addressed = Message(d.lna, message.originator, message.token, message.database, message.body)
    for m in (addressed, message):
        for out in d.receive(m, now):
            codec.encode(out)  # everything it sends is a valid message
