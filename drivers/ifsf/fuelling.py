"""The controller's view of one IFSF fuelling point and its transaction buffer, as pure code.

`FuellingPointView` is fed what the dispenser says about one FP (answers and unsolicited
messages: its state, its nozzles, its running sale, its stored transactions, its errors) and
asked what follows: the events the station hears (drivers/base.py's vocabulary, the same as
Wayne DART's), the sale to record next, a nozzle's totals as of that sale. No I/O, no clock.

How IFSF's model meets the station's (docs/drivers.md, "IFSF fuelling points"):

* The station records a sale when the pump says FILLING_COMPLETED, reads it (`filling_info`),
  reads the nozzle's totals, commits, and only then resets the pump. An IFSF FP goes back to
  Idle at the end of a sale and keeps the sale in its transaction buffer, Payable, until the
  controller clears it. So an FP at rest (Closed, Idle, Calling) that holds an uncleared
  (Payable or Locked) transaction is reported FILLING_COMPLETED; the station's "reset" is the
  Clear of the transaction it read; the next uncleared one shows FILLING_COMPLETED again,
  until none is left (then RESET).
* Transactions are offered oldest first. TR_Seq_Nb wraps from 9999 to 0001, so "oldest" is
  the first after the widest gap on the cycle of sequence numbers (`oldest_first`).
* The totals the station stores with a sale are its identity (Sale.uid), so they must be the
  same when the sale is read again after a restart: a nozzle's totals *as of* the transaction
  in hand are its totals now minus the volume and amount of the later uncleared transactions
  on that nozzle (the dispenser's totals count every finished sale, the buffer holds the later
  ones). Nothing the controller remembers enters the figure, only what the dispenser holds.
* When a sale ends the FP's state change and the transaction's status message are two
  messages, in either order. Between them the FP would look idle with nothing to record,
  and the station would end the authorization as "returned to idle without fuel". So when
  the FP leaves a started or fuelling state and the sale's transaction has not been heard
  of, the status before the end is held until it is (or until a complete read of the
  buffer shows there is none: `wants_listing`). So is an FP back at rest from Authorised:
  a release withdrawn, or a sale whose other messages were lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final

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
from drivers.ifsf.encodings import Lna

SEQ_CYCLE: Final = 9999  # TR_Seq_Nb runs 0001-9999, then 0001 again

INOPERATIVE, CLOSED, IDLE, CALLING, AUTHORISED, STARTED = 1, 2, 3, 4, 5, 6
SUSPENDED_STARTED, FUELLING, SUSPENDED_FUELLING = 7, 8, 9
# A sale is under way: started (nozzle out after a release) or fuelling, suspended or not.
IN_SALE: Final = frozenset({STARTED, SUSPENDED_STARTED, FUELLING, SUSPENDED_FUELLING})
# At rest: a stored sale here is waiting to be recorded. Inoperative is left out: the FP's
# application is out of order, and its sale is read once it is usable again.
AT_REST: Final = frozenset({CLOSED, IDLE, CALLING})

CLEARED, PAYABLE, LOCKED = 1, 2, 3
UNCLEARED: Final = frozenset({PAYABLE, LOCKED})

# IFSF FP_State -> the station's vocabulary. Started is "authorized, nozzle out, no flow"
# (the station's STARTED): the lift deadline keeps running until fuel flows.
STATUS_OF_STATE: Final[Mapping[int, DispenserStatus]] = {
    INOPERATIVE: DispenserStatus.NOT_PROGRAMMED,
    CLOSED: DispenserStatus.SWITCHED_OFF,
    IDLE: DispenserStatus.RESET,
    CALLING: DispenserStatus.RESET,
    AUTHORISED: DispenserStatus.AUTHORIZED,
    STARTED: DispenserStatus.AUTHORIZED,
    SUSPENDED_STARTED: DispenserStatus.SUSPENDED,
    FUELLING: DispenserStatus.FILLING,
    SUSPENDED_FUELLING: DispenserStatus.SUSPENDED,
}

# FP data ids (ifsf-over-ip.md §5).
FP_NB_TRAN_BUFFER_NOT_PAID = 0x02
FP_STATE = 0x14
FP_LOG_NOZ_STATE = 0x15
FP_CURRENT_AMOUNT = 0x22
FP_CURRENT_VOLUME = 0x23
FP_CURRENT_UNIT_PRICE = 0x24
FP_CURRENT_LOG_NOZ = 0x25
FP_ALARM = 0x50
FP_STATUS_MESSAGE = 0x64
FP_RUNNING_MESSAGE = 0x66
# Transaction buffer data ids.
TR_SEQ_NB = 0x01
TR_AMOUNT = 0x05
TR_VOLUME = 0x06
TR_UNIT_PRICE = 0x07
TR_LOG_NOZ = 0x08
TR_PROD_NB = 0x0A
TR_BUFF_CONTR_ID = 0x14
TR_STATE = 0x15
TR_CLEAR = 0x1E
TR_LOCK = 0x1F
TR_STATUS_MESSAGE = 0x64
# Oil-company offline sales (PetroChina / Sinopec, ifsf-over-ip.md §6).
TR_OFFLINE_READ = 0xC8
TR_OFFLINE_REMOVE = 0xC9
TR_OFFLINE_END_TOTAL = 0xCD
# What the controller reads of a stored sale.
TR_READ_IDS: Final = (
    TR_SEQ_NB,
    TR_STATE,
    TR_AMOUNT,
    TR_VOLUME,
    TR_UNIT_PRICE,
    TR_LOG_NOZ,
    TR_PROD_NB,
    TR_BUFF_CONTR_ID,
)
# Logical nozzle totals.
LN_VOL_TOTAL = 0x14
LN_AMOUNT_TOTAL = 0x15
# Error entries.
ER_TYPE = 0x01
PRICE_CHANGE_OK = 0x99
PRICE_CHANGE_FAULTS: Final = frozenset(range(0x35, 0x39))


def oldest_first(seqs: Iterable[int]) -> list[int]:
    """TR_Seq_Nb values, oldest first, on a cycle that wraps from 9999 to 0001.

    The buffer holds a handful of sales with consecutive numbers, so the widest gap between
    two of them on the cycle is the one between the newest and the oldest: the order starts
    right after it (9998, 9999, 0001, 0002). Of gaps equally wide the one closing the cycle
    wins, so that numbers that do not wrap come in their plain order."""
    ordered = sorted(set(seqs))
    if len(ordered) < 2:
        return ordered
    widest, start = ordered[0] + SEQ_CYCLE - ordered[-1], 0
    for i in range(1, len(ordered)):
        gap = ordered[i] - ordered[i - 1]
        if gap > widest:
            widest, start = gap, i
    return ordered[start:] + ordered[:start]


@dataclass(frozen=True, slots=True)
class Transaction:
    """One stored sale of the FP's buffer, as much of it as the dispenser has told.

    `nozzle` is the logical nozzle (1-8). `read` is true once the entry itself was read (its
    nozzle and price known), not only its status message. `offline` marks an oil-company
    offline sale (stored while no controller was there, read with C8h, removed with C9h),
    `end_total` the nozzle's volume total after it (CDh) as the dispenser gave it."""

    seq: int
    state: int | None = None
    volume: Decimal | None = None
    amount: Decimal | None = None
    unit_price: Decimal | None = None
    nozzle: int | None = None
    product: int | None = None
    controller: Lna | None = None
    read: bool = False
    offline: bool = False
    end_total: Decimal | None = None

    @property
    def uncleared(self) -> bool:
        return self.state in UNCLEARED

    @property
    def complete(self) -> bool:
        """Everything the totals of another sale depend on is known."""
        return self.nozzle is not None and self.volume is not None and self.amount is not None


class MissingDetails(Exception):
    """Totals as of a transaction need the nozzle, volume and amount of the later uncleared
    ones: `seqs` must be read first."""

    def __init__(self, seqs: list[int]) -> None:
        super().__init__(f"transactions {', '.join(f'{s:04d}' for s in seqs)} not read yet")
        self.seqs = seqs


def _same_exponent(value: Decimal, like: Decimal) -> Decimal:
    """`value` written with `like`'s decimal places when that is exact (a sale's identity is
    the text of its totals: 1000.00 and 1000.000 must not be two sales)."""
    exponent = like.as_tuple().exponent
    assert isinstance(exponent, int)
    quantized = value.quantize(Decimal(1).scaleb(exponent))
    return quantized if quantized == value else value


@dataclass(slots=True)
class _Running:
    volume: Decimal | None = None
    amount: Decimal | None = None
    unit_price: Decimal | None = None
    nozzle: int | None = None  # logical


@dataclass(slots=True)
class FuellingPointView:
    """What the controller knows of one FP: fed the dispenser's words, asked what follows.

    `pump` is the station's address of the FP and `nozzles` maps the station's nozzle
    numbers to the FP's logical nozzles; every event and FillingInfo speaks the station's
    numbers. Every feeding method returns the events it gives rise to, in the order the
    station should hear them (a nozzle before the status it explains)."""

    line: str
    pump: int
    fp: int
    nozzles: Mapping[int, int]
    state: int | None = None
    nozzle_mask: int = 0
    unpaid_limit: int | None = None  # Nb_Tran_Buffer_Not_Paid, once read
    transactions: dict[int, Transaction] = field(default_factory=dict)  # uncleared only
    in_hand: int | None = None  # the seq handed to the station by `take`, until cleared
    in_hand_offline: bool = False  # ... of an offline sale (its own numbering)
    offline: dict[int, Transaction] = field(default_factory=dict)  # read, not yet removed
    listed: bool = False  # a complete read of the buffer since the link (re)opened
    prices: dict[int, Decimal] = field(default_factory=dict)  # logical nozzle -> price set
    totals: dict[int, tuple[Decimal, Decimal]] = field(default_factory=dict)  # last read
    price_changes_confirmed: int = 0  # error entries 99h "price change successful" heard
    # Counts what the view was told. A read's answers are fed after whatever came in while
    # the driver waited for them (the link reader runs on): `generation` taken before the
    # read (`as_of`) keeps them from undoing newer news (a sale cleared or stored meanwhile).
    generation: int = 0
    running: _Running = field(default_factory=_Running)
    lifted: int | None = None  # the logical nozzle last seen out
    _held: DispenserStatus | None = None  # the status held while a sale's end is unexplained
    _pending_end: bool = False
    _fill_stored: bool = False  # the current sale's transaction arrived while it ran
    _reported: DispenserStatus | None = None  # last StatusReport emitted (None: emit next)
    _reported_nozzle: tuple[int, bool] | None = None
    _logical: dict[int, int] = field(default_factory=dict)  # logical nozzle -> station's
    _heard: dict[int, int] = field(default_factory=dict)  # seq -> generation last told of it
    _cleared_at: dict[int, int] = field(default_factory=dict)  # seq -> generation cleared
    _pending_at: int = 0  # generation when the end of a sale began to be held

    def __post_init__(self) -> None:
        self._logical = {ln: nozzle for nozzle, ln in self.nozzles.items()}
        if len(self._logical) != len(self.nozzles):
            raise ValueError(f"pump {self.pump}: two nozzles map to one logical nozzle")
        for ln in self._logical:
            if not 1 <= ln <= 8:
                raise ValueError(f"pump {self.pump}: logical nozzle {ln} is outside 1-8")

    # ------------------------------------------------------------------ what is known
    @property
    def device(self) -> str:
        return f"{self.line}/FP{self.fp}"

    def station_nozzle(self, logical: int | None) -> int | None:
        return None if logical is None else self._logical.get(logical)

    def logical_nozzle(self, nozzle: int) -> int:
        """The FP's logical nozzle of the station's nozzle; CommandRejected if it has none."""
        found = self.nozzles.get(nozzle)
        if found is None:
            raise CommandRejected(
                f"pump {self.pump} has no nozzle {nozzle} in the IFSF configuration",
                device=self.device,
                code="unknown_nozzle",
            )
        return found

    def uncleared(self) -> list[Transaction]:
        """The Payable and Locked transactions, oldest first."""
        return [self.transactions[s] for s in oldest_first(self.transactions)]

    def status(self) -> DispenserStatus | None:
        """What the station is told the FP is (None: its state is not known yet)."""
        if self.state is None:
            return None
        if self._pending_end and self._held is not None and self.state in AT_REST:
            return self._held
        if self.state in AT_REST and (self.transactions or self.offline):
            return DispenserStatus.FILLING_COMPLETED
        return STATUS_OF_STATE.get(self.state, DispenserStatus.NOT_PROGRAMMED)

    @property
    def wants_listing(self) -> bool:
        """A complete read of the buffer (`FP 20 0000`) is due: never done since the link
        opened, or a sale ended whose transaction has not been heard of."""
        return not self.listed or self._pending_end

    def missing_details(self) -> list[int]:
        """Uncleared transactions whose nozzle, volume or amount is not known yet."""
        return [t.seq for t in self.uncleared() if not t.complete]

    def unpaid_limit_reached(self) -> bool:
        return self.unpaid_limit is not None and len(self.transactions) >= self.unpaid_limit

    # ------------------------------------------------------------------ connection
    def link_lost(self) -> None:
        """The link dropped: what the dispenser says next is news (the station marks the pump
        offline and must hear its status again), and the buffer must be read again. The
        transaction in hand stays in hand: the station may have committed it."""
        self.state = None
        self.listed = False
        self.offline.clear()  # read again with the rest when the link is back
        if self.in_hand_offline:
            self.in_hand, self.in_hand_offline = None, False
        self._pending_end = False
        self._held = None
        self._reported = None
        self._reported_nozzle = None

    # ------------------------------------------------------------------ feeding
    def feed(self, message: codec.Message) -> list[DispenserEvent]:
        """An Answer or unsolicited message about this FP (other databases: no events)."""
        body = message.body
        if not isinstance(body, (codec.Answer, codec.Unsolicited)):
            return []
        address = message.database
        values = decode_values(address, body.items)
        if isinstance(address, db.FuellingPoint) and address.fp == self.fp:
            return self.fp_values(values)
        if isinstance(address, db.TransactionBuffer) and address.fp == self.fp:
            if address.every:
                return []
            whole = isinstance(body, codec.Answer) and TR_LOG_NOZ in values
            return self.transaction_values(address.seq, values, read=whole)
        if isinstance(address, db.LogicalNozzle) and address.fp == self.fp and address.nozzle:
            self.nozzle_totals(address.nozzle, values)
            return []
        if isinstance(address, db.ErrorEntry) and address.fp == self.fp:
            return self.error_values(address.error_id, values)
        return []

    def fp_values(self, values: Mapping[int, Any]) -> list[DispenserEvent]:
        """FP data items (an Answer, an FP_Status_Message or a running-sale message)."""
        events: list[DispenserEvent] = []
        if isinstance(values.get(FP_NB_TRAN_BUFFER_NOT_PAID), int):
            self.unpaid_limit = values[FP_NB_TRAN_BUFFER_NOT_PAID]
        running = self.running
        if isinstance(values.get(FP_CURRENT_LOG_NOZ), int):
            running.nozzle = values[FP_CURRENT_LOG_NOZ]
        if isinstance(values.get(FP_CURRENT_UNIT_PRICE), Decimal):
            running.unit_price = values[FP_CURRENT_UNIT_PRICE]
        volume, amount = values.get(FP_CURRENT_VOLUME), values.get(FP_CURRENT_AMOUNT)
        if isinstance(volume, Decimal) or isinstance(amount, Decimal):
            if isinstance(volume, Decimal):
                running.volume = volume
            if isinstance(amount, Decimal):
                running.amount = amount
            if running.volume is not None and running.amount is not None:
                events.append(FillingReport(self.line, self.pump, running.volume, running.amount))
        if isinstance(values.get(FP_LOG_NOZ_STATE), int):
            self.nozzle_mask = values[FP_LOG_NOZ_STATE]
            events += self._nozzle_events()
        alarm = values.get(FP_ALARM)
        if isinstance(alarm, bytes) and any(alarm):
            code = int.from_bytes(alarm, "big")
            events.append(
                AlarmReport(self.line, self.pump, code, f"FP_Alarm {alarm.hex(' ').upper()}")
            )
        state = values.get(FP_STATE)
        if isinstance(state, int):
            self.generation += 1
            self._enter(state)
        return events + self._status_events()

    def _enter(self, state: int) -> None:
        old = self.state
        if state == AUTHORISED and old != AUTHORISED:
            self._fill_stored = False  # released: no sale of this release stored yet
        if state in IN_SALE and old not in IN_SALE:
            self._fill_stored = False
            if old is not None and not self._pending_end:
                # A new sale: the running figures so far are the last one's.
                self.running = _Running()
        ended = old in IN_SALE and state not in IN_SALE
        # Released, then at rest: terminated, timed out, or a sale whose Started and
        # Fuelling never reached us (a dispenser mute for a moment drops its messages).
        unexplained = old == AUTHORISED and state in AT_REST
        if old is not None and (ended or unexplained) and not self._fill_stored:
            # The sale is over and its transaction not heard of yet: hold what the station
            # was told until it is (or a read of the buffer shows none was stored).
            self._pending_end = True
            self._held = STATUS_OF_STATE[old]
            self._pending_at = self.generation
        elif state not in AT_REST and state != INOPERATIVE:
            self._pending_end, self._held = False, None  # released again, or a new sale
        self.state = state

    def transaction_values(
        self,
        seq: int,
        values: Mapping[int, Any],
        *,
        read: bool = False,
        as_of: int | None = None,
    ) -> list[DispenserEvent]:
        """A transaction's data: its status message, or the answer to a read of it sent when
        the view's generation was `as_of` (ignored if the view heard of it since)."""
        if isinstance(values.get(TR_SEQ_NB), int) and values[TR_SEQ_NB]:
            seq = values[TR_SEQ_NB]
        if not seq or (as_of is not None and self._cleared_at.get(seq, -1) >= as_of):
            return []  # cleared since the read was sent: its answer is old news
        self.generation += 1
        self._heard[seq] = self.generation
        known = self.transactions.get(seq)
        tx = known or Transaction(seq)
        changes: dict[str, Any] = {}
        for data_id, name, kind in _TR_FIELDS:
            value = values.get(data_id)
            if isinstance(value, kind) and not isinstance(value, bool):
                changes[name] = value
        if (
            as_of is not None
            and known is not None
            and _STATE_ORDER.get(changes.get("state"), 0) < _STATE_ORDER.get(known.state, 0)
        ):
            # Payable -> Locked -> Cleared only goes on: a lower state in an answer was true
            # when the dispenser answered, and what came after it is newer.
            changes.pop("state")
        tx = replace(tx, **changes, read=tx.read or read)
        if tx.state is None and known is None:
            tx = replace(tx, state=PAYABLE)  # a sale reported without its state is stored
        if tx.uncleared:
            if known is None and (self.state in IN_SALE or self._pending_end):
                self._fill_stored = True
                self._pending_end, self._held = False, None
            self.transactions[seq] = tx
        else:
            if known is None and (self.state in IN_SALE or self._pending_end):
                # Stored and cleared at once (a zero sale some dispensers clear themselves).
                self._fill_stored = True
                self._pending_end, self._held = False, None
            self.transactions.pop(seq, None)
            self._cleared_at[seq] = self.generation
            if self.in_hand == seq:
                self.in_hand = None
        return self._status_events()

    def listing(self, seqs: Iterable[int], *, as_of: int | None = None) -> list[DispenserEvent]:
        """A complete read of the buffer ended: `seqs` are every uncleared transaction when
        it was answered (their data fed before; the read sent at generation `as_of`). Any
        other one the view held, and heard nothing of since, was cleared meanwhile."""
        listed = set(seqs)

        def newer(seq: int) -> bool:
            return as_of is not None and self._heard.get(seq, -1) >= as_of

        for seq in list(self.transactions):
            if seq not in listed and not newer(seq):
                del self.transactions[seq]
                if self.in_hand == seq:
                    self.in_hand = None
        for seq in listed:
            if seq and seq not in self.transactions and not newer(seq):
                self.transactions[seq] = Transaction(seq, state=PAYABLE)
        self.listed = True
        if as_of is None or self._pending_at <= as_of:  # sent once the hold began
            self._pending_end, self._held = False, None
        return self._status_events()

    def cleared(self, seq: int, *, offline: bool = False) -> list[DispenserEvent]:
        """The dispenser acknowledged the Clear (or, `offline`, the removal) of `seq`. The
        status event is not returned: the driver gives it after the station's reset returns
        (`report`)."""
        (self.offline if offline else self.transactions).pop(seq, None)
        if not offline:
            self.generation += 1
            self._heard[seq] = self._cleared_at[seq] = self.generation
        if self.in_hand == seq and self.in_hand_offline == offline:
            self.in_hand, self.in_hand_offline = None, False
        return []

    def offline_sale(self, seq: int, values: Mapping[int, Any]) -> list[DispenserEvent]:
        """An offline sale read with C8h: recorded like any other once the sales held before
        it are (they are older: the controller was there then), then removed."""
        if not seq:
            return []
        tx = self.offline.get(seq) or Transaction(seq, state=PAYABLE, offline=True, read=True)
        changes: dict[str, Any] = {}
        for data_id, name, kind in _TR_FIELDS:
            value = values.get(data_id)
            if isinstance(value, kind) and not isinstance(value, bool) and data_id != TR_STATE:
                changes[name] = value
        end = values.get(TR_OFFLINE_END_TOTAL)
        if isinstance(end, Decimal):
            changes["end_total"] = end
        self.offline[seq] = replace(tx, **changes)
        return self._status_events()

    def nozzle_totals(self, logical: int, values: Mapping[int, Any]) -> None:
        volume, amount = values.get(LN_VOL_TOTAL), values.get(LN_AMOUNT_TOTAL)
        if isinstance(volume, Decimal) and isinstance(amount, Decimal):
            self.totals[logical] = (volume, amount)

    def error_values(self, error_id: int, values: Mapping[int, Any]) -> list[DispenserEvent]:
        """An error entry (FP_Error_Type_Mes or an answer): an alarm, except 99h, the Chinese
        profiles' "price change successful", which confirms a price change."""
        code = values.get(ER_TYPE, error_id)
        if not isinstance(code, int):
            return []
        if code == PRICE_CHANGE_OK:
            self.price_changes_confirmed += 1
            return []
        if not code:
            return []
        name = db.ERROR_CODES.get(code, "unknown error")
        return [AlarmReport(self.line, self.pump, code, f"FP error {code:02X}h: {name}")]

    # ------------------------------------------------------------------ events
    def report(self) -> list[DispenserEvent]:
        """The FP's status now, whether or not it changed (after a reset, after the link
        opened: the station must hear it again)."""
        self._reported = None
        self._reported_nozzle = None
        return self._nozzle_events() + self._status_events()

    def _status_events(self) -> list[DispenserEvent]:
        status = self.status()
        if status is None or status is self._reported:
            return []
        self._reported = status
        return [StatusReport(self.line, self.pump, status, self.state or 0)]

    def _nozzle_events(self) -> list[DispenserEvent]:
        lifted = db.nozzles_of(self.nozzle_mask)
        known = [ln for ln in lifted if ln in self._logical]
        if known:
            # One nozzle of an FP is out at a time; of several bits the lowest is taken.
            self.lifted = known[0]
            nozzle, out = self._logical[known[0]], True
        elif lifted:
            nozzle, out = 0, True  # a nozzle the configuration does not map
        else:
            last = self._reported_nozzle
            nozzle, out = (last[0] if last else 0), False
        if self._reported_nozzle == (nozzle, out):
            return []
        self._reported_nozzle = (nozzle, out)
        price = self._price_of(self.nozzles.get(nozzle, 0))
        return [NozzleReport(self.line, self.pump, nozzle, out, price)]

    def _price_of(self, logical: int) -> Decimal:
        if self.running.unit_price is not None and self.running.nozzle == logical:
            return self.running.unit_price
        return self.prices.get(logical, Decimal(0))

    # ------------------------------------------------------------------ sales
    def next_sale(self) -> Transaction | None:
        """The transaction to record next: the oldest uncleared one, then the offline sales
        in the order read (None: none)."""
        found = self.uncleared()
        if found:
            return found[0]
        return next(iter(self.offline.values()), None)

    def take(self, seq: int, *, offline: bool = False) -> FillingInfo:
        """`seq` is handed to the station (locked and read): its sale, in station numbers."""
        tx = (self.offline if offline else self.transactions)[seq]
        self.in_hand, self.in_hand_offline = seq, offline
        nozzle = self.station_nozzle(tx.nozzle)
        return FillingInfo(
            tx.volume if tx.volume is not None else Decimal(0),
            tx.amount if tx.amount is not None else Decimal(0),
            nozzle,
            tx.unit_price if nozzle else None,
            reference=f"{'offline' if offline else 'TR'} {seq:04d}",
        )

    def running_info(self) -> FillingInfo:
        """The sale under way (or the last one seen running) when nothing is stored."""
        run = self.running
        nozzle = self.station_nozzle(run.nozzle or self.lifted)
        return FillingInfo(
            run.volume if run.volume is not None else Decimal(0),
            run.amount if run.amount is not None else Decimal(0),
            nozzle,
            run.unit_price if nozzle else None,
        )

    def totals_as_of(
        self, logical: int, current: tuple[Decimal, Decimal]
    ) -> tuple[Decimal, Decimal]:
        """A nozzle's totals as of the transaction in hand: `current` (read now) minus the
        later uncleared sales on that nozzle. With nothing in hand: `current`. Raises
        MissingDetails when a later transaction must be read first.

        The offline sales read are later than every sale held in the buffer. An offline sale
        in hand takes its volume total from the dispenser (CDh): its identity does not depend
        on what else is held. Offline sales are read one at a time, so the amount total of one
        that is not the last on its nozzle still counts the later ones (the station's totals
        check says so), as does a sale held from before the controller went away."""
        order = self.uncleared() + list(self.offline.values())
        keys = [(t.offline, t.seq) for t in order]
        key = (self.in_hand_offline, self.in_hand)
        if self.in_hand is None or key not in keys:
            return current
        later = order[keys.index(key) + 1 :]
        missing = [t.seq for t in later if not t.complete and not t.offline]
        if missing:
            raise MissingDetails(missing)
        volume, amount = current
        for tx in later:
            if tx.nozzle == logical and tx.volume is not None and tx.amount is not None:
                volume -= tx.volume
                amount -= tx.amount
        in_hand = order[keys.index(key)]
        if in_hand.offline and in_hand.end_total is not None and in_hand.nozzle == logical:
            volume = in_hand.end_total
        return _same_exponent(volume, current[0]), _same_exponent(amount, current[1])


_STATE_ORDER: Final[Mapping[int | None, int]] = {PAYABLE: 1, LOCKED: 2, CLEARED: 3}
_TR_FIELDS: Final = (
    (TR_STATE, "state", int),
    (TR_VOLUME, "volume", Decimal),
    (TR_AMOUNT, "amount", Decimal),
    (TR_UNIT_PRICE, "unit_price", Decimal),
    (TR_LOG_NOZ, "nozzle", int),
    (TR_PROD_NB, "product", int),
    (TR_BUFF_CONTR_ID, "controller", Lna),
)


def decode_values(address: db.Address, items: Iterable[codec.DataItem]) -> dict[int, Any]:
    """Data items decoded by their id; one that does not decode is left out (the rest of
    the message still counts: a dispenser of another make may fill a field differently)."""
    values: dict[int, Any] = {}
    for item in items:
        try:
            values[item.data_id] = db.decode_value(address, item.data_id, item.data)
        except Exception:  # FrameError, or an id the tables do not know
            continue
    return values


# ---------------------------------------------------------------------------------------
# Refusals: an Ack that is not a plain ACK, as a typed error with a technician's reason.
# ---------------------------------------------------------------------------------------
MS_ACK_CODES: Final[Mapping[int, str]] = {
    1: "node_unreachable",
    2: "application_down",
    3: "inconsistent_message",
    5: "data_refused",
    6: "unknown_database",
    7: "busy",
    8: "unexpected",
    9: "already_locked",
}
DATA_ACK_CODES: Final[Mapping[int, str]] = {
    1: "invalid_value",
    2: "not_writable",
    3: "refused_in_state",
    4: "no_such_data",
    5: "not_understood",
    6: "not_accepted",
}
RELEASE_FP = 0x3E


def refusal(
    ack: codec.Ack,
    what: str,
    address: db.Address,
    *,
    view: FuellingPointView | None = None,
    device: str | None = None,
) -> CommandRejected | None:
    """The error an Ack means for `what` ("authorize", "lock transaction 0012" ...), or None
    for an ACK. Codes: MS_ACK_CODES, DATA_ACK_CODES for MS_ACK 5 (the first refused item's),
    and "unpaid_limit" for a release refused while the FP holds as many unpaid sales as its
    buffer allows."""
    refused = [pair for pair in ack.data_acks if pair.code]
    if ack.status == codec.MS_ACK_OK and not refused:
        return None
    meaning = ack.meaning or f"MS_ACK {ack.status}"
    code = MS_ACK_CODES.get(ack.status, "refused")
    parts = [f"{what} refused by the dispenser: {meaning}"]
    if refused:
        first = refused[0]
        code = DATA_ACK_CODES.get(first.code, code)
        parts = [f"{what} refused by the dispenser"]
        parts += [
            f"{db.data_id_name(address, p.data_id)}: {p.meaning or f'data ack {p.code}'}"
            for p in refused
        ]
    if view is not None:
        if view.state is not None:
            parts.append(f"FP {view.fp} is {db.FP_STATES.get(view.state, view.state)}")
        releasing = any(p.data_id == RELEASE_FP and p.code in (3, 6) for p in refused)
        if releasing and view.unpaid_limit_reached():
            code = "unpaid_limit"
            parts.append(
                f"{len(view.transactions)} unpaid sale(s), the buffer's limit: clear them first"
            )
    return CommandRejected("; ".join(parts), device=device, code=code)
