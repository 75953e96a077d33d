"""The controller's view of an IFSF fuelling point: states, nozzles, stored sales oldest
first, totals as of a sale, refusals; and properties over any interleaving of reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.base import (
    AlarmReport,
    CommandRejected,
    DispenserEvent,
    DispenserStatus,
    FillingInfo,
    FillingReport,
    NozzleReport,
    StatusReport,
)
from drivers.ifsf import codec
from drivers.ifsf import databases as db
from drivers.ifsf import fuelling as f
from drivers.ifsf.codec import Ack, Answer, DataAck, Message, Unsolicited
from drivers.ifsf.codec import item as it
from drivers.ifsf.encodings import Lna
from drivers.ifsf.fuelling import FuellingPointView, MissingDetails, oldest_first
from tests.drivers.ifsf.frames import CD, FP1, GOLDEN

D = Decimal
S = DispenserStatus
DISPENSER = Lna(1, 3)


def view(nozzles: dict[int, int] | None = None) -> FuellingPointView:
    return FuellingPointView("ifsf1", 7, 1, nozzles or {1: 1, 2: 2})


def statuses(events: list[DispenserEvent]) -> list[DispenserStatus]:
    return [e.status for e in events if isinstance(e, StatusReport)]


def fp(v: FuellingPointView, state: int | None = None, mask: int | None = None) -> list:
    values: dict[int, object] = {}
    if mask is not None:
        values[f.FP_LOG_NOZ_STATE] = mask
    if state is not None:
        values[f.FP_STATE] = state
    return v.fp_values(values)


def stored(
    v: FuellingPointView,
    seq: int,
    volume: str = "10.00",
    amount: str = "15.00",
    nozzle: int | None = 1,
    state: int = f.PAYABLE,
) -> list:
    """The TR_Buff_Status_Message (nozzle None) or a read of the entry (nozzle given)."""
    values: dict[int, object] = {
        f.TR_SEQ_NB: seq,
        f.TR_STATE: state,
        f.TR_VOLUME: D(volume),
        f.TR_AMOUNT: D(amount),
    }
    if nozzle is not None:
        values[f.TR_LOG_NOZ] = nozzle
        values[f.TR_UNIT_PRICE] = D("1.500")
    return v.transaction_values(seq, values, read=nozzle is not None)


# ---------------------------------------------------------------------------------------
# TR_Seq_Nb order
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seqs", "expected"),
    [
        ([], []),
        ([5], [5]),
        ([3, 1, 2], [1, 2, 3]),
        ([1, 9999, 2, 9998], [9998, 9999, 1, 2]),
        ([9999, 1], [9999, 1]),
        ([4000, 6000], [4000, 6000]),
        ([4000, 9000], [9000, 4000]),  # more than half the cycle apart: taken as wrapped
    ],
)
def test_oldest_first(seqs: list[int], expected: list[int]) -> None:
    assert oldest_first(seqs) == expected


@given(
    start=st.integers(1, f.SEQ_CYCLE),
    steps=st.lists(st.integers(1, 3), min_size=0, max_size=20),
    data=st.data(),
)
def test_oldest_first_follows_creation_order_across_the_wrap(
    start: int, steps: list[int], data: st.DataObject
) -> None:
    created = [start]
    for step in steps:
        created.append((created[-1] - 1 + step) % f.SEQ_CYCLE + 1)
    shuffled = data.draw(st.permutations(created))
    assert oldest_first(shuffled) == created


# ---------------------------------------------------------------------------------------
# States and nozzles
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "status"),
    [
        (1, S.NOT_PROGRAMMED),
        (2, S.SWITCHED_OFF),
        (3, S.RESET),
        (4, S.RESET),
        (5, S.AUTHORIZED),
        (6, S.AUTHORIZED),
        (7, S.SUSPENDED),
        (8, S.FILLING),
        (9, S.SUSPENDED),
    ],
)
def test_each_fp_state_maps_to_the_station_status(state: int, status: DispenserStatus) -> None:
    v = view()
    events = fp(v, state)
    assert events == [StatusReport("ifsf1", 7, status, state)]
    assert fp(v, state) == []  # unchanged: nothing new to tell


@pytest.mark.parametrize("state", [2, 3, 4])
def test_an_fp_at_rest_with_an_uncleared_sale_is_filling_completed(state: int) -> None:
    v = view()
    fp(v, state)
    assert statuses(stored(v, 12, nozzle=None)) == [S.FILLING_COMPLETED]
    assert v.status() is S.FILLING_COMPLETED


@pytest.mark.parametrize(("state", "status"), [(1, S.NOT_PROGRAMMED), (5, S.AUTHORIZED)])
def test_an_uncleared_sale_does_not_hide_an_unusable_or_released_fp(
    state: int, status: DispenserStatus
) -> None:
    v = view()
    stored(v, 12)
    assert statuses(fp(v, state)) == [status]


def test_a_locked_sale_is_still_uncleared() -> None:
    v = view()
    fp(v, 3)
    stored(v, 12, state=f.LOCKED)
    assert v.status() is S.FILLING_COMPLETED


def test_nozzle_lift_and_hang_up_in_station_numbers_before_the_status() -> None:
    v = view({1: 2, 2: 1})  # station nozzle 1 is logical nozzle 2
    v.prices[2] = D("1.459")
    fp(v, 3, 0)
    events = fp(v, 6, 0b10)
    assert events == [
        NozzleReport("ifsf1", 7, 1, True, D("1.459")),
        StatusReport("ifsf1", 7, S.AUTHORIZED, 6),
    ]
    assert fp(v, 3, 0)[0] == NozzleReport("ifsf1", 7, 1, False, D("1.459"))


def test_a_lifted_nozzle_the_configuration_does_not_map_is_out_as_nozzle_0() -> None:
    v = view({1: 1})
    fp(v, 3, 0)
    assert fp(v, 4, 0b100) == [NozzleReport("ifsf1", 7, 0, True, D(0))]


def test_the_running_sale_is_a_filling_report() -> None:
    v = view()
    fp(v, 8, 1)
    events = v.fp_values({f.FP_CURRENT_AMOUNT: D("3.00"), f.FP_CURRENT_VOLUME: D("2.00")})
    assert events == [FillingReport("ifsf1", 7, D("2.00"), D("3.00"))]
    assert v.running_info() == FillingInfo(D("2.00"), D("3.00"), 1, None)


def test_a_fp_alarm_and_an_error_entry_are_alarms_and_99h_confirms_a_price() -> None:
    v = view()
    assert v.fp_values({f.FP_ALARM: bytes(8)}) == []
    (alarm,) = v.fp_values({f.FP_ALARM: bytes(7) + b"\x01"})
    assert isinstance(alarm, AlarmReport) and alarm.code == 1
    (error,) = v.error_values(0x22, {f.ER_TYPE: 0x22})
    assert isinstance(error, AlarmReport) and "emergency stop" in error.text
    assert v.error_values(0x99, {f.ER_TYPE: 0x99}) == []
    assert v.price_changes_confirmed == 1


# ---------------------------------------------------------------------------------------
# The end of a sale, its two messages in either order
# ---------------------------------------------------------------------------------------
def test_fp_back_to_idle_before_its_transaction_holds_the_sale_status() -> None:
    v = view()
    v.listing([])
    fp(v, 5)
    fp(v, 8, 1)
    events = fp(v, 3, 0)
    assert statuses(events) == []  # FILLING still: the sale's transaction is not heard of
    assert v.status() is S.FILLING and v.wants_listing
    assert statuses(stored(v, 12, nozzle=None)) == [S.FILLING_COMPLETED]
    assert not v.wants_listing


def test_transaction_before_the_fp_state_gives_filling_completed_at_once() -> None:
    v = view()
    v.listing([])
    fp(v, 8, 1)
    assert statuses(stored(v, 12, nozzle=None)) == []  # still fuelling
    assert statuses(fp(v, 3, 0)) == [S.FILLING_COMPLETED]


def test_a_sale_with_no_transaction_ends_at_rest_once_the_buffer_is_read() -> None:
    v = view()
    v.listing([])
    fp(v, 6, 1)
    assert statuses(fp(v, 3, 0)) == []
    assert v.wants_listing
    assert statuses(v.listing([])) == [S.RESET]


def test_a_buffer_read_sent_after_the_sale_ended_ends_the_hold() -> None:
    # The driver reads the buffer as soon as the end is held: the read's answer is newer
    # than the FP state that began the hold, so it explains the end (no sale stored).
    v = view()
    v.listing([])
    fp(v, 6, 1)
    fp(v, 3, 0)
    assert statuses(v.listing([], as_of=v.generation)) == [S.RESET]
    assert not v.wants_listing


def test_a_buffer_read_sent_before_the_sale_ended_does_not() -> None:
    v = view()
    v.listing([])
    fp(v, 6, 1)
    as_of = v.generation  # sent while the sale still ran: its answer is older news
    fp(v, 3, 0)
    assert statuses(v.listing([], as_of=as_of)) == []
    assert v.wants_listing


def test_a_zero_sale_stored_cleared_explains_the_end() -> None:
    v = view()
    v.listing([])
    fp(v, 6, 1)
    fp(v, 3, 0)
    assert statuses(stored(v, 12, "0.00", "0.00", state=f.CLEARED)) == [S.RESET]


def test_a_release_back_at_rest_with_no_sale_heard_holds_until_the_buffer_is_read() -> None:
    # The FP's Started and Fuelling never reached us (a dispenser mute for a moment drops
    # its unsolicited messages): Authorised, then Idle, then the sale's transaction.
    v = view()
    v.listing([])
    fp(v, 8, 1)  # an earlier sale, stored while it ran, then cleared
    stored(v, 11, nozzle=None)
    fp(v, 3, 0)
    v.cleared(11)
    fp(v, 5)
    assert statuses(fp(v, 3, 0)) == []  # not "back to idle without fuel" yet
    assert v.status() is S.AUTHORIZED and v.wants_listing
    assert statuses(stored(v, 12, nozzle=None)) == [S.FILLING_COMPLETED]
    assert not v.wants_listing


def test_a_release_ended_without_a_sale_is_at_rest_once_the_buffer_is_read() -> None:
    v = view()
    v.listing([])
    fp(v, 5)
    fp(v, 3, 0)  # terminated, or timed out
    assert statuses(v.listing([], as_of=v.generation)) == [S.RESET]


def test_a_new_sale_starting_ends_the_hold() -> None:
    v = view()
    v.listing([])
    fp(v, 8, 1)
    fp(v, 3, 0)
    fp(v, 5)
    assert v.status() is S.AUTHORIZED


# ---------------------------------------------------------------------------------------
# Recording: oldest first, cleared, the next one shown
# ---------------------------------------------------------------------------------------
def test_sales_are_taken_oldest_first_across_the_wrap_and_cleared_one_by_one() -> None:
    v = view()
    fp(v, 3)
    stored(v, 1, "2.00", "3.00", nozzle=2)
    stored(v, 9999, "1.00", "1.50", nozzle=1)
    tx = v.next_sale()
    assert tx is not None and tx.seq == 9999
    assert v.take(9999) == FillingInfo(D("1.00"), D("1.50"), 1, D("1.500"), "TR 9999")
    assert v.in_hand == 9999
    assert v.cleared(9999) == []  # the driver reports after the station's reset
    assert statuses(v.report()) == [S.FILLING_COMPLETED]
    tx = v.next_sale()
    assert tx is not None and tx.seq == 1
    v.take(1)
    v.cleared(1)
    assert statuses(v.report()) == [S.RESET]
    assert v.next_sale() is None


def test_totals_as_of_a_sale_subtract_the_later_uncleared_sales_on_that_nozzle() -> None:
    v = view()
    fp(v, 3)
    stored(v, 10, "10.00", "15.00", nozzle=1)
    stored(v, 11, "5.00", "7.50", nozzle=2)  # another nozzle: not subtracted from nozzle 1
    stored(v, 12, "4.00", "6.00", nozzle=1)
    now = (D("1000.00"), D("1500.00"))
    assert v.totals_as_of(1, now) == now  # nothing in hand: the totals now
    v.take(10)
    assert v.totals_as_of(1, now) == (D("996.00"), D("1494.00"))
    assert v.totals_as_of(2, (D("50.00"), D("75.00"))) == (D("45.00"), D("67.50"))
    v.cleared(10)
    v.take(11)
    assert v.totals_as_of(1, now) == (D("996.00"), D("1494.00"))
    v.cleared(11)
    v.take(12)
    assert v.totals_as_of(1, now) == now


def test_totals_as_of_keep_the_dispensers_decimal_places() -> None:
    v = view()
    stored(v, 10, nozzle=1)
    stored(v, 11, "4.000", "6.0", nozzle=1)
    v.take(10)
    volume, amount = v.totals_as_of(1, (D("1000.00"), D("1500.00")))
    assert (str(volume), str(amount)) == ("996.00", "1494.00")


def test_totals_as_of_need_the_later_sales_read() -> None:
    v = view()
    stored(v, 10, nozzle=1)
    stored(v, 11, nozzle=None)  # only its status message: which nozzle?
    assert v.missing_details() == [11]
    v.take(10)
    with pytest.raises(MissingDetails) as raised:
        v.totals_as_of(1, (D(100), D(150)))
    assert raised.value.seqs == [11]
    stored(v, 11, nozzle=2)
    assert v.missing_details() == []
    assert v.totals_as_of(1, (D(100), D(150))) == (D(100), D(150))


def test_a_listing_forgets_sales_cleared_elsewhere_and_adds_the_unknown() -> None:
    v = view()
    fp(v, 3)
    stored(v, 10, nozzle=1)
    v.take(10)
    events = v.listing([11])
    assert v.in_hand is None and list(v.transactions) == [11]
    assert v.missing_details() == [11]
    assert events == []  # FILLING_COMPLETED before and after


def test_a_reads_answer_fed_late_does_not_undo_what_came_after_it() -> None:
    """The link reader goes on while the driver waits for a read: what it heard after the
    read was sent (a sale cleared, a sale stored, a sale's end) is newer than the answer."""
    v = view()
    fp(v, 3)
    v.listing([])
    stored(v, 10, nozzle=1)
    as_of = v.generation  # the driver sends a read of the buffer
    stored(v, 10, nozzle=None, state=f.CLEARED)  # cleared elsewhere meanwhile
    stored(v, 11, nozzle=None)  # and a new sale stored after the read was answered
    assert stored_as_of(v, 10, as_of) == []  # the answer still lists 10: old news
    v.listing([10], as_of=as_of)
    assert list(v.transactions) == [11]
    fp(v, 8, 1)
    as_of = v.generation
    fp(v, 3, 0)  # a sale ended after the read was sent
    v.listing([11], as_of=as_of)
    assert v.wants_listing  # the old answer does not explain this end
    v.listing([11])
    assert not v.wants_listing


def test_a_reads_answer_does_not_take_a_sale_back_to_payable() -> None:
    v = view()
    fp(v, 3)
    stored(v, 10, nozzle=None)
    as_of = v.generation
    stored(v, 10, nozzle=None, state=f.LOCKED)  # our Lock's status message, then the answer
    stored_as_of(v, 10, as_of, state=f.PAYABLE)
    tx = v.transactions[10]
    assert (tx.state, tx.nozzle, tx.read) == (f.LOCKED, 1, True)


def stored_as_of(v: FuellingPointView, seq: int, as_of: int, state: int = f.PAYABLE) -> list:
    values = {
        f.TR_SEQ_NB: seq,
        f.TR_STATE: state,
        f.TR_VOLUME: D("10.00"),
        f.TR_AMOUNT: D("15.00"),
        f.TR_LOG_NOZ: 1,
    }
    return v.transaction_values(seq, values, read=True, as_of=as_of)


def test_a_sale_cleared_elsewhere_is_forgotten() -> None:
    v = view()
    fp(v, 3)
    stored(v, 10, nozzle=1)
    assert statuses(stored(v, 10, state=f.CLEARED)) == [S.RESET]
    assert v.transactions == {}


def test_after_the_link_drops_the_status_is_told_again() -> None:
    v = view()
    fp(v, 3)
    stored(v, 10, nozzle=1)
    v.take(10)
    v.link_lost()
    assert v.status() is None and v.wants_listing and v.in_hand == 10
    assert statuses(fp(v, 3)) == [S.FILLING_COMPLETED]


def test_an_unknown_nozzle_is_a_typed_refusal() -> None:
    with pytest.raises(CommandRejected) as raised:
        view().logical_nozzle(5)
    assert raised.value.code == "unknown_nozzle"


def test_two_nozzles_on_one_logical_nozzle_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="logical"):
        view({1: 1, 2: 1})
    with pytest.raises(ValueError, match="outside"):
        view({1: 9})


def _offline(v: FuellingPointView, seq: int, volume: str, end_total: str) -> list:
    return v.offline_sale(
        seq,
        {
            f.TR_SEQ_NB: seq,
            f.TR_STATE: f.PAYABLE,
            f.TR_VOLUME: D(volume),
            f.TR_AMOUNT: D(volume) * 2,
            f.TR_LOG_NOZ: 1,
            f.TR_UNIT_PRICE: D("2.00"),
            f.TR_OFFLINE_END_TOTAL: D(end_total),
        },
    )


def test_offline_sales_come_after_the_held_ones_with_the_dispensers_volume_total() -> None:
    v = view()
    fp(v, 3)
    stored(v, 40, "1.00", "1.50", nozzle=1)  # held from before the controller went away
    _offline(v, 3, "4.00", "104.00")
    assert statuses(_offline(v, 4, "6.00", "110.00")) == []  # FILLING_COMPLETED already
    tx = v.next_sale()
    assert tx is not None and (tx.seq, tx.offline) == (40, False)
    v.take(40)
    v.cleared(40)
    tx = v.next_sale()
    assert tx is not None and (tx.seq, tx.offline) == (3, True)
    assert v.take(3, offline=True) == FillingInfo(
        D("4.00"), D("8.00"), 1, D("2.00"), "offline 0003"
    )
    # Volume: the dispenser's own (CDh); amount: the later known sale taken off.
    assert v.totals_as_of(1, (D("110.00"), D("220.00"))) == (D("104.00"), D("208.00"))
    v.cleared(3, offline=True)
    v.take(4, offline=True)
    assert v.totals_as_of(1, (D("110.00"), D("220.00"))) == (D("110.00"), D("220.00"))
    v.cleared(4, offline=True)
    assert statuses(v.report()) == [S.RESET]


def test_offline_sales_read_are_forgotten_with_the_link_and_read_again() -> None:
    v = view()
    fp(v, 3)
    _offline(v, 3, "4.00", "104.00")
    v.take(3, offline=True)
    v.link_lost()
    assert v.offline == {} and v.in_hand is None


# ---------------------------------------------------------------------------------------
# Fed real messages
# ---------------------------------------------------------------------------------------
def _golden(name: str) -> Message:
    return next(g.message for g in GOLDEN if g.name.startswith(name))


def test_the_captured_unsolicited_status_started_nozzle_1() -> None:
    v = view()
    events = v.feed(_golden("E4 unsolicited"))
    assert events == [
        NozzleReport("ifsf1", 7, 1, True, D(0)),
        StatusReport("ifsf1", 7, S.AUTHORIZED, 6),
    ]


def test_a_transaction_status_message_and_a_read_of_the_entry() -> None:
    v = view()
    v.feed(Message(CD, DISPENSER, 0, FP1, Answer((it(FP1, 0x14, 3),))))
    tr = db.TransactionBuffer(1, 42)
    status = Unsolicited(
        (
            it(tr, 0x64),
            it(tr, 0x01, 42),
            it(tr, 0x15, 2),
            it(tr, 0x14, Lna(0, 0)),
            it(tr, 0x05, D("30.00")),
            it(tr, 0x06, D("20.00")),
        )
    )
    assert statuses(v.feed(Message(CD, DISPENSER, 0, tr, status))) == [S.FILLING_COMPLETED]
    assert v.missing_details() == [42]
    read = Answer(
        (
            it(tr, 0x01, 42),
            it(tr, 0x15, 3),
            it(tr, 0x05, D("30.00")),
            it(tr, 0x06, D("20.00")),
            it(tr, 0x07, D("1.500")),
            it(tr, 0x08, 2),
            it(tr, 0x14, CD),
        )
    )
    v.feed(Message(CD, DISPENSER, 3, tr, read))
    tx = v.transactions[42]
    assert (tx.state, tx.nozzle, tx.controller, tx.read) == (f.LOCKED, 2, CD, True)
    assert v.take(42) == FillingInfo(D("20.00"), D("30.00"), 2, D("1.500"), "TR 0042")


def test_totals_and_a_malformed_item_and_other_fps() -> None:
    v = view()
    ln = db.LogicalNozzle(1, 2)
    answer = Answer((it(ln, 0x14, D("123.45")), it(ln, 0x15, D("200.00"))))
    assert v.feed(Message(CD, DISPENSER, 1, ln, answer)) == []
    assert v.totals[2] == (D("123.45"), D("200.00"))
    bad = Answer((codec.DataItem(0x14, b"\x05\x01"), it(FP1, 0x15, 0)))  # two-byte state
    # The state is left out, the nozzle byte still read (the first word on the nozzles).
    assert v.feed(Message(CD, DISPENSER, 1, FP1, bad)) == [NozzleReport("ifsf1", 7, 0, False, D(0))]
    assert v.state is None
    other = db.FuellingPoint(2)
    assert v.feed(Message(CD, DISPENSER, 1, other, Answer((it(other, 0x14, 3),)))) == []
    assert v.state is None


# ---------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------
def test_the_captured_release_refusal_is_refused_in_state_with_the_reason() -> None:
    v = view()
    fp(v, 2)
    ack = _golden("E3 refused: MS_ACK 5").body
    assert isinstance(ack, Ack)
    error = f.refusal(ack, "authorize", FP1, view=v, device="ifsf1/FP1")
    assert isinstance(error, CommandRejected)
    assert error.code == "refused_in_state"
    assert "Release_FP: command refused in this state" in str(error)
    assert "FP 1 is Closed" in str(error)


def test_a_release_refused_at_the_unpaid_limit_says_so() -> None:
    v = view()
    v.fp_values({f.FP_NB_TRAN_BUFFER_NOT_PAID: 2})
    fp(v, 3)
    stored(v, 1)
    stored(v, 2)
    ack = Ack(5, (DataAck(0x19, 0), DataAck(0x3E, 6)))
    error = f.refusal(ack, "authorize", FP1, view=v)
    assert error is not None and error.code == "unpaid_limit"
    assert "2 unpaid sale(s)" in str(error)


@pytest.mark.parametrize(
    ("status", "code"),
    [(7, "busy"), (9, "already_locked"), (6, "unknown_database"), (4, "refused")],
)
def test_ms_ack_codes(status: int, code: str) -> None:
    error = f.refusal(Ack(status), "lock transaction 0012", db.TransactionBuffer(1, 12))
    assert error is not None and error.code == code
    assert str(error).startswith("lock transaction 0012 refused by the dispenser")


def test_an_ack_is_no_refusal_and_ms_ack_5_always_is() -> None:
    assert f.refusal(Ack(0), "authorize", FP1) is None
    error = f.refusal(Ack(5, (DataAck(0x3E, 0),)), "authorize", FP1)
    assert error is not None and error.code == "data_refused"


# ---------------------------------------------------------------------------------------
# Properties: a dispenser model, any interleaving of its reports, restarts of the CD
# ---------------------------------------------------------------------------------------
@dataclass
class _Sale:
    seq: int
    nozzle: int
    volume: Decimal
    amount: Decimal
    totals_after: tuple[Decimal, Decimal]


@dataclass
class _Dispenser:
    """Just enough of an IFSF FP: sales stored Payable, totals, TR_Seq_Nb that wraps."""

    seq: int
    state: int = 3
    totals: dict[int, tuple[Decimal, Decimal]] = field(
        default_factory=lambda: {1: (D("5000.00"), D("7500.00")), 2: (D("80.00"), D("90.00"))}
    )
    buffer: dict[int, tuple[_Sale, int]] = field(default_factory=dict)  # seq -> (sale, state)
    sales: list[_Sale] = field(default_factory=list)
    outbox: list[tuple[str, object]] = field(default_factory=list)  # reports not yet delivered
    produced: int = 0  # reports ever put in the outbox
    delivered: int = 0  # ... taken out of it (delivered, or lost with the link)

    def sell(self, nozzle: int, centilitres: int) -> None:
        volume = D(centilitres).scaleb(-2)
        amount = (volume * D("1.50")).quantize(D("0.01"))
        vol, amt = self.totals[nozzle]
        self.totals[nozzle] = (vol + volume, amt + amount)
        self.seq = self.seq % f.SEQ_CYCLE + 1
        sale = _Sale(self.seq, nozzle, volume, amount, self.totals[nozzle])
        self.sales.append(sale)
        self.buffer[sale.seq] = (sale, f.PAYABLE)
        self.outbox += [("fp", (6, 1 << (nozzle - 1))), ("fp", (8, 1 << (nozzle - 1)))]
        # The end: FP state and transaction status, in an order the test draws.
        self.outbox += [("end", sale.seq)]
        self.produced += 3

    def lose_outbox(self) -> None:
        self.delivered += len(self.outbox)
        self.outbox.clear()

    def snapshot(self, v: FuellingPointView) -> tuple[int, dict[int, tuple[_Sale, int]], int]:
        """A read of the buffer sent now and answered at once: (the view's generation when
        sent, what the answer lists, how many reports went out before it)."""
        return v.generation, dict(self.buffer), self.produced

    def answer(
        self, v: FuellingPointView, read: tuple[int, dict[int, tuple[_Sale, int]], int]
    ) -> None:
        """The answer taken in late: the reports sent before it are in already (one link,
        in order); reports sent after it may have been taken in before it too."""
        as_of, entries, produced = read
        while self.delivered < produced:
            self.deliver(v, 0, False)
        for seq, (sale, state) in entries.items():
            values = {
                f.TR_SEQ_NB: seq,
                f.TR_STATE: state,
                f.TR_VOLUME: sale.volume,
                f.TR_AMOUNT: sale.amount,
                f.TR_LOG_NOZ: sale.nozzle,
            }
            v.transaction_values(seq, values, read=True, as_of=as_of)
        v.listing(entries, as_of=as_of)

    def deliver(self, v: FuellingPointView, index: int, swap: bool) -> list[DispenserEvent]:
        kind, what = self.outbox.pop(index)
        self.delivered += 1
        if kind == "fp":
            state, mask = what  # type: ignore[misc]
            return v.fp_values({f.FP_STATE: state, f.FP_LOG_NOZ_STATE: mask})
        seq = what
        assert isinstance(seq, int)
        sale, state = self.buffer.get(seq, (None, f.CLEARED))
        events: list[DispenserEvent] = []
        parts = ["fp", "tr"] if not swap else ["tr", "fp"]
        for part in parts:
            if part == "fp":
                events += v.fp_values({f.FP_STATE: 3, f.FP_LOG_NOZ_STATE: 0})
            elif sale is not None:
                events += v.transaction_values(
                    seq,
                    {
                        f.TR_SEQ_NB: seq,
                        f.TR_STATE: state,
                        f.TR_VOLUME: sale.volume,
                        f.TR_AMOUNT: sale.amount,
                    },
                )
        return events

    def read_entry(self, v: FuellingPointView, seq: int) -> None:
        sale, state = self.buffer.get(seq, (None, f.CLEARED))
        if sale is None:
            v.transaction_values(seq, {f.TR_SEQ_NB: seq, f.TR_STATE: f.CLEARED}, read=True)
            return
        v.transaction_values(
            seq,
            {
                f.TR_SEQ_NB: seq,
                f.TR_STATE: state,
                f.TR_VOLUME: sale.volume,
                f.TR_AMOUNT: sale.amount,
                f.TR_LOG_NOZ: sale.nozzle,
                f.TR_UNIT_PRICE: D("1.50"),
            },
            read=True,
        )

    def list_buffer(self, v: FuellingPointView) -> list[DispenserEvent]:
        for seq in self.buffer:
            self.read_entry(v, seq)
        return v.listing(self.buffer)


@dataclass
class _Station:
    """What the station does with the view's answers: record FILLING_COMPLETED sales."""

    recorded: dict[str, int] = field(default_factory=dict)  # uid -> seq
    order: list[int] = field(default_factory=list)  # seqs as first recorded

    def finish(self, d: _Dispenser, v: FuellingPointView, crash_before_clear: bool) -> bool:
        if v.wants_listing:
            d.list_buffer(v)
        if v.status() is not S.FILLING_COMPLETED:
            return False
        tx = v.next_sale()
        assert tx is not None
        d.read_entry(v, tx.seq)  # Lock, then read
        d.buffer[tx.seq] = (d.buffer[tx.seq][0], f.LOCKED)
        info = v.take(tx.seq)
        assert info.nozzle is not None
        logical = v.logical_nozzle(info.nozzle)
        # The driver reads the buffer again with the totals: sales stored since the last
        # report are later than the one in hand (their messages may still be on the way).
        d.list_buffer(v)
        assert v.missing_details() == []
        totals = v.totals_as_of(logical, d.totals[logical])
        sale = d.buffer[tx.seq][0]
        assert (info.volume, info.amount) == (sale.volume, sale.amount)
        assert totals == sale.totals_after, "totals as of the sale"
        uid = f"N{info.nozzle}-T{totals[0]}"
        if info.volume == 0:
            pass  # the station records no zero fill; it only resets (clears) the pump
        elif uid in self.recorded:
            assert self.recorded[uid] == tx.seq, "one identity, two sales"
        else:
            self.recorded[uid] = tx.seq
            self.order.append(tx.seq)
        if crash_before_clear:
            return True
        del d.buffer[tx.seq]
        v.cleared(tx.seq)
        v.report()
        return True


_actions = st.lists(
    st.one_of(
        st.tuples(st.just("sell"), st.integers(1, 2), st.integers(0, 5000)),
        st.tuples(st.just("deliver"), st.just(0), st.booleans()),
        st.tuples(st.just("finish"), st.booleans(), st.just(0)),
        st.tuples(st.just("restart"), st.just(0), st.just(0)),
        st.tuples(st.just("drop"), st.just(0), st.just(0)),
        st.tuples(st.just("read"), st.just(0), st.just(0)),
        st.tuples(st.just("answer"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


_LATE_ANSWER = [
    ("sell", 1, 400),
    *[("deliver", 0, False)] * 3,
    ("read", 0, 0),  # the buffer read, answered with the sale still there ...
    ("finish", False, 0),  # ... which the station records and clears meanwhile
    ("sell", 2, 100),
    ("read", 0, 0),
    ("answer", 0, 0),  # ... before the answer is taken in
    ("finish", False, 0),
    ("answer", 0, 0),
]


@settings(max_examples=300, deadline=None)
@example(start=9999, actions=_LATE_ANSWER)
@given(start=st.integers(9980, 9999) | st.integers(1, 9999), actions=_actions)
def test_every_sale_is_recorded_once_oldest_first_with_its_own_totals(
    start: int, actions: list[tuple[str, object, object]]
) -> None:
    d = _Dispenser(seq=start)
    v = view({1: 1, 2: 2})
    v.fp_values({f.FP_STATE: 3, f.FP_LOG_NOZ_STATE: 0})
    station = _Station()
    reads: list[tuple[int, dict[int, tuple[_Sale, int]], int]] = []  # sent, not taken in
    for action, a, b in actions:
        if action == "read":
            reads.append(d.snapshot(v))
        elif action == "answer" and reads:
            d.answer(v, reads.pop(0))
        elif action == "sell" and len(d.buffer) < 6:
            assert isinstance(a, int) and isinstance(b, int)
            d.sell(a, b)
        elif action == "deliver" and d.outbox:
            assert isinstance(b, bool)
            # Reports go out in order (one TCP link); a restart or a drop loses those in flight.
            d.deliver(v, 0, b)
        elif action == "finish":
            assert isinstance(a, bool)
            station.finish(d, v, crash_before_clear=a)
        elif action == "restart":
            v = view({1: 1, 2: 2})
            d.lose_outbox()
            reads.clear()
            v.fp_values({f.FP_STATE: 3, f.FP_LOG_NOZ_STATE: 0})
        elif action == "drop":
            v.link_lost()
            d.lose_outbox()
            reads.clear()
            v.fp_values({f.FP_STATE: 3, f.FP_LOG_NOZ_STATE: 0})
    # Everything delivered, then the station drains the buffer.
    while d.outbox:
        d.deliver(v, 0, False)
    for _ in range(len(d.sales) + 2):
        if not station.finish(d, v, crash_before_clear=False):
            break
    assert v.status() is S.RESET
    assert d.buffer == {}
    sold = [s.seq for s in d.sales if s.volume]
    assert sorted(station.recorded.values()) == sorted(sold)
    assert station.order == sold, "oldest first"


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(1, 9999),
    sales=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 3000)), min_size=1, max_size=6),
    data=st.data(),
)
def test_any_order_of_end_reports_offers_each_sale_once_until_cleared(
    start: int, sales: list[tuple[int, int]], data: st.DataObject
) -> None:
    """The messages of several finished sales arrive shuffled (the FP's and the buffer's,
    status messages and reads): FILLING_COMPLETED is never reported with nothing to take,
    and RESET never while a sale waits once the buffer was read."""
    d = _Dispenser(seq=start)
    v = view({1: 1, 2: 2})
    v.listing([])
    for nozzle, cl in sales:
        d.sell(nozzle, cl)
    messages = [("fp", e) for e in d.outbox if e[0] == "fp"]
    messages += [("end", e) for e in d.outbox if e[0] == "end"]
    d.outbox.clear()
    for kind, entry in data.draw(st.permutations(messages)):
        if kind == "fp":
            state, mask = entry[1]  # type: ignore[misc]
            events = v.fp_values({f.FP_STATE: state, f.FP_LOG_NOZ_STATE: mask})
        else:
            d.outbox.append(entry)  # type: ignore[arg-type]
            events = d.deliver(v, 0, data.draw(st.booleans()))
        for status in statuses(events):
            if status is S.FILLING_COMPLETED:
                assert v.next_sale() is not None
    v.fp_values({f.FP_STATE: 3, f.FP_LOG_NOZ_STATE: 0})  # where the FP really is
    if v.wants_listing:
        d.list_buffer(v)
    offered: list[int] = []
    while v.status() is S.FILLING_COMPLETED:
        tx = v.next_sale()
        assert tx is not None and tx.seq not in offered
        offered.append(tx.seq)
        del d.buffer[tx.seq]
        v.cleared(tx.seq)
    assert offered == [s.seq for s in d.sales]
    assert v.status() is S.RESET
