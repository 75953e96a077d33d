"""A simulated IFSF dispenser node as a pure model: its databases, fuelling points and sales.

No I/O and no clock of its own: decoded codec messages from a controller (CD) go in with the
time (`receive(message, now)`), customers act on it (`lift`, `squeeze`, `hang_up` ... or the
`Customer` scripts and `RandomCustomers`), and `tick(now)` lets the fuel flow. Every call
returns the messages the node sends: the answer or ack first, then unsolicited ones (FP
status changes, running amount and volume, transaction-buffer changes, error entries), each
addressed to a recipient the CD added to COM_SV (ifsf-over-ip.md §3, §7).

The fuelling point's state machine is `FP_TRANSITIONS` (fuelling-point-states.md, and
ifsf-over-ip.md §6 for the commands allowed per state); an illegal (state, event) pair raises
`IllegalTransition`, which a command from the CD turns into Data_Ack 3. Transaction buffers
are `TR_TRANSITIONS` (Payable -> Locked -> Cleared). The CD never makes the model raise:
whatever it sends is answered by an MS_ACK code and data acks.

Where the sources disagree the model takes a `Dialect` parameter (docs/drivers.md, "IFSF
simulator"): FP_Alarm in the status message, the nozzle in the running message, error 99h
after a price change, offline sales C8h-CDh, the unit of the running-message frequency, what
Unlock leaves, the data ack of a release refused at the unpaid-buffer limit.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal

from drivers.base import DriverError, FrameError
from drivers.ifsf import codec
from drivers.ifsf import databases as db
from drivers.ifsf.codec import Ack, Answer, DataAck, DataItem, Message, Read, Unsolicited, Write
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import STATUS_CONFIGURATION_NEEDED, Heartbeat

# Data acks (ifsf-over-ip.md §3).
ACK_OK: Final = 0
ACK_INVALID: Final = 1
ACK_NOT_WRITABLE: Final = 2
ACK_WRONG_STATE: Final = 3
ACK_NO_DATA: Final = 4
ACK_NOT_ACCEPTED: Final = 6
# MS_ACK codes the model sends.
MS_OK: Final = 0
MS_UNKNOWN_NODE: Final = 1
MS_DATA_REFUSED: Final = 5
MS_UNKNOWN_ADDRESS: Final = 6
MS_BUSY: Final = 7
MS_ALREADY_LOCKED: Final = 9

ERROR_PRICE_CHANGED: Final = 0x99
ERROR_AUTH_TIMEOUT: Final = 0x24
NO_LNA: Final = Lna(0, 0)
MAX_SEQ: Final = 9999
PRICE_DECIMALS: Final = 4  # the most places a unit price may have (bcd6)


class DispenserError(DriverError):
    """Root of the simulated dispenser's typed errors."""

    code = "dispenser"


class IllegalTransition(DispenserError):
    """An event the fuelling point's state machine has no transition for in its state."""

    code = "illegal_transition"

    def __init__(self, state: FpState, event: FpEvent) -> None:
        super().__init__(f"{event.value} is not allowed in FP state {state.value} {state.name}")
        self.state = state
        self.event = event


class IllegalTransaction(DispenserError):
    """A transaction-buffer command not allowed in the sale's Trans_State."""

    code = "illegal_transaction"

    def __init__(self, state: TrState, command: TrCommand) -> None:
        super().__init__(f"{command.value} is not allowed on a {state.name} transaction")
        self.state = state
        self.command = command


class CustomerError(DispenserError):
    """Something a customer cannot do at the pump (lift a second nozzle, squeeze nothing)."""

    code = "customer"


# ======================================================================================
# State machines
# ======================================================================================
class FpState(enum.IntEnum):
    INOPERATIVE = 1
    CLOSED = 2
    IDLE = 3
    CALLING = 4
    AUTHORISED = 5
    STARTED = 6
    SUSPENDED_STARTED = 7
    FUELLING = 8
    SUSPENDED_FUELLING = 9


class FpEvent(enum.Enum):
    """Commands from the CD (the FP data ids 3Ch-42h) and what happens at the pump."""

    OPEN = "Open_FP"
    CLOSE = "Close_FP"
    RELEASE = "Release_FP"
    TERMINATE = "Terminate_FP"
    SUSPEND = "Suspend_FP"
    RESUME = "Resume_FP"
    CLEAR_DISPLAY = "Clear_Display"
    LIFT = "nozzle lifted"
    HANG_UP = "nozzle hung up"
    FLOW = "first flow"
    FILL_END = "preset or limit reached"
    AUTH_TIMEOUT = "authorisation timed out"
    FAULT = "fault"
    RECOVER = "fault cleared"


S = FpState
_ALL = tuple(FpState)
# ifsf-over-ip.md §6 (SINOPEC's per-command states, consistent with ZSY) and the typical
# transitions of fuelling-point-states.md. A nozzle lifted where the FP ignores it (Closed,
# Authorised for another nozzle, left out after a sale ended) is no event: see FuellingPoint.
FP_TRANSITIONS: Final[Mapping[tuple[FpState, FpEvent], FpState]] = {
    (S.CLOSED, FpEvent.OPEN): S.IDLE,
    **{(s, FpEvent.CLOSE): S.CLOSED for s in _ALL[2:]},
    (S.IDLE, FpEvent.RELEASE): S.AUTHORISED,
    (S.CALLING, FpEvent.RELEASE): S.STARTED,
    (S.AUTHORISED, FpEvent.RELEASE): S.AUTHORISED,  # a new preset or mask
    # Terminate in Calling ends nothing: no authorisation is running.
    (S.CALLING, FpEvent.TERMINATE): S.CALLING,
    **{(s, FpEvent.TERMINATE): S.IDLE for s in _ALL[4:]},
    (S.STARTED, FpEvent.SUSPEND): S.SUSPENDED_STARTED,
    (S.FUELLING, FpEvent.SUSPEND): S.SUSPENDED_FUELLING,
    (S.SUSPENDED_STARTED, FpEvent.RESUME): S.STARTED,
    (S.SUSPENDED_FUELLING, FpEvent.RESUME): S.FUELLING,
    **{(s, FpEvent.CLEAR_DISPLAY): s for s in (S.IDLE, S.CALLING, S.AUTHORISED)},
    (S.IDLE, FpEvent.LIFT): S.CALLING,
    (S.AUTHORISED, FpEvent.LIFT): S.STARTED,
    **{(s, FpEvent.HANG_UP): S.IDLE for s in (S.CALLING, *_ALL[5:])},
    (S.STARTED, FpEvent.FLOW): S.FUELLING,
    (S.FUELLING, FpEvent.FILL_END): S.IDLE,
    (S.AUTHORISED, FpEvent.AUTH_TIMEOUT): S.IDLE,
    (S.STARTED, FpEvent.AUTH_TIMEOUT): S.IDLE,
    **{(s, FpEvent.FAULT): S.INOPERATIVE for s in _ALL},
    (S.INOPERATIVE, FpEvent.RECOVER): S.CLOSED,
}
FP_COMMANDS: Final[Mapping[int, FpEvent]] = {
    0x3C: FpEvent.OPEN,
    0x3D: FpEvent.CLOSE,
    0x3E: FpEvent.RELEASE,
    0x3F: FpEvent.TERMINATE,
    0x40: FpEvent.SUSPEND,
    0x41: FpEvent.RESUME,
    0x42: FpEvent.CLEAR_DISPLAY,
}
_SALE_RUNNING: Final = frozenset({S.FUELLING, S.SUSPENDED_FUELLING})


def fp_next(state: FpState, event: FpEvent) -> FpState:
    """The state `event` leads to from `state`; IllegalTransition if it is not allowed."""
    found = FP_TRANSITIONS.get((state, event))
    if found is None:
        raise IllegalTransition(state, event)
    return found


class TrState(enum.IntEnum):
    CLEARED = 1
    PAYABLE = 2
    LOCKED = 3


class TrCommand(enum.Enum):
    LOCK = "Lock_Transaction"
    UNLOCK = "Unlock_Transaction"
    CLEAR = "Clear_Transaction"


TR_TRANSITIONS: Final[Mapping[tuple[TrState, TrCommand], TrState]] = {
    (TrState.PAYABLE, TrCommand.LOCK): TrState.LOCKED,
    (TrState.LOCKED, TrCommand.UNLOCK): TrState.PAYABLE,  # Dialect.unlock_to_cleared: CLEARED
    (TrState.PAYABLE, TrCommand.CLEAR): TrState.CLEARED,
    (TrState.LOCKED, TrCommand.CLEAR): TrState.CLEARED,
}
TR_COMMANDS: Final[Mapping[int, TrCommand]] = {
    0x1E: TrCommand.CLEAR,
    0x1F: TrCommand.LOCK,
    0x20: TrCommand.UNLOCK,
}


def tr_next(state: TrState, command: TrCommand) -> TrState:
    found = TR_TRANSITIONS.get((state, command))
    if found is None:
        raise IllegalTransaction(state, command)
    return found


# ======================================================================================
# Configuration
# ======================================================================================
@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the dispensers the sources describe (ifsf-over-ip.md §10).

    `node_per_nozzle`: the PetroChina DIT style, every nozzle its own node with FP 1
    (`dit_layout` builds it). `offline_sales`: sales made while no CD is there are kept for
    the C8h read and C9h removal; `offline_end`: the address of the "no more" ack
    (ZSY `21 20 0000`: "tr_every"; SINOPEC `20 21 0000`: "fp_every").
    `running_message_unit_s`: seconds per unit of Running_Transaction_Message_Frequency
    (TAG's comments say both 1 and 10). `unpaid_limit_ack`: the Data_Ack of a Release_FP
    refused because Nb_Tran_Buffer_Not_Paid sales are unpaid (no source gives it).
    """

    name: str = "generic"
    fp_alarm_in_status: bool = False
    nozzle_in_running_message: bool = False
    price_change_error: bool = False
    offline_sales: bool = False
    offline_end: Literal["tr_every", "fp_every"] = "fp_every"
    node_per_nozzle: bool = False
    unlock_to_cleared: bool = False
    running_message_unit_s: float = 1.0
    unpaid_limit_ack: int = ACK_NOT_ACCEPTED
    configuration_needed_bit: bool = False  # heartbeat status 01h until every FP is opened


GENERIC = Dialect()
PETROCHINA = Dialect(
    name="petrochina",
    fp_alarm_in_status=True,
    price_change_error=True,
    offline_sales=True,
    offline_end="tr_every",
    node_per_nozzle=True,
)
SINOPEC = Dialect(
    name="sinopec",
    nozzle_in_running_message=True,
    price_change_error=True,
    offline_sales=True,
    offline_end="fp_every",
    configuration_needed_bit=True,
)
DIALECTS: Final[Mapping[str, Dialect]] = {d.name: d for d in (GENERIC, PETROCHINA, SINOPEC)}


@dataclass(frozen=True, slots=True)
class ProductSpec:
    """A product (PR_ID 41h + index - 1): its Prod_Nb, name and unit price per fuelling mode."""

    number: int
    name: str
    prices: Mapping[int, Decimal]


@dataclass(frozen=True, slots=True)
class NozzleSpec:
    """A logical nozzle: its product (1-8, the PR_ID index) and the totals it carries on from."""

    product: int
    volume_total: Decimal = Decimal("0.00")
    amount_total: Decimal = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class FpSpec:
    nozzles: tuple[NozzleSpec, ...]
    name: str = ""


@dataclass(frozen=True, slots=True)
class DispenserSpec:
    """One dispenser node. Volumes and amounts carry `volume_decimals`/`amount_decimals`
    places; `flow_rate_lps` is a customer's flow unless they give their own."""

    lna: Lna
    fps: tuple[FpSpec, ...]
    products: tuple[ProductSpec, ...]
    dialect: Dialect = GENERIC
    volume_decimals: int = 2
    amount_decimals: int = 2
    unpaid_limit: int = 2  # Nb_Tran_Buffer_Not_Paid (1-15)
    history: int = 5  # Nb_Of_Historic_Trans: cleared sales kept
    start_state: FpState = FpState.CLOSED
    auth_state_mode: int = 0  # C_DAT 0Bh; 1 forbids the Authorised state (pre-authorisation)
    max_auth_time: int = 0  # C_DAT 0Dh, units of 10 s, 0: no limit
    heartbeat_interval: int = 10
    running_frequency: int = 1  # FP 3Bh, in Dialect.running_message_unit_s
    flow_rate_lps: Decimal = Decimal("0.6")
    # A fill stops here whatever the customer does (the display's bcd8 holds no more).
    max_fill_volume: Decimal = Decimal("9999.99")
    recipients: tuple[Lna, ...] = ()  # unsolicited data goes here before any CD adds itself

    def __post_init__(self) -> None:
        if not 1 <= len(self.fps) <= 4:
            raise ValueError(f"a node has 1-4 fuelling points, not {len(self.fps)}")
        if not 1 <= len(self.products) <= 8:
            raise ValueError(f"a node has 1-8 products, not {len(self.products)}")
        for index, fp in enumerate(self.fps, start=1):
            if not 1 <= len(fp.nozzles) <= 8:
                raise ValueError(f"FP {index} has 1-8 logical nozzles, not {len(fp.nozzles)}")
            for nozzle in fp.nozzles:
                if not 1 <= nozzle.product <= len(self.products):
                    raise ValueError(f"FP {index}: no product {nozzle.product}")
        if not 1 <= self.unpaid_limit <= 15:
            raise ValueError("unpaid_limit is 1-15")
        if self.start_state not in (FpState.INOPERATIVE, FpState.CLOSED, FpState.IDLE):
            raise ValueError("a node starts Inoperative, Closed or Idle")


def dit_layout(
    first_node: int, nozzles: Sequence[NozzleSpec], products: tuple[ProductSpec, ...], **kw: Any
) -> list[DispenserSpec]:
    """The PetroChina DIT style: every nozzle its own node (1.first_node, 1.first_node+1 ...),
    each with FP 1 holding logical nozzle 1 (ifsf-over-ip.md §1)."""
    kw.setdefault("dialect", PETROCHINA)
    return [
        DispenserSpec(Lna(1, first_node + i), (FpSpec((nozzle,)),), products, **kw)
        for i, nozzle in enumerate(nozzles)
    ]


# ======================================================================================
# Runtime parts
# ======================================================================================
@dataclass
class Transaction:
    """One sale in an FP's transaction buffer."""

    seq: int
    nozzle: int
    product: int  # PR_ID index
    prod_nb: int
    unit_price: Decimal
    volume: Decimal
    amount: Decimal
    release_controller: Lna
    state: TrState = TrState.PAYABLE
    controller: Lna = NO_LNA  # TR_Buff_Contr_Id: who locked it
    fuelling_mode: int = 1
    error_code: int = 0


@dataclass
class _Product:
    number: int  # Prod_Nb
    name: str


@dataclass
class OfflineSale:
    """A sale made while no CD was there (PetroChina / Sinopec C8h-CDh)."""

    seq: int
    fp: int
    transaction: Transaction
    when: datetime
    start_total: Decimal
    end_total: Decimal


@dataclass
class Nozzle:
    number: int
    product: int
    volume_total: Decimal
    amount_total: Decimal
    sales: int = 0
    meter: int = 0
    physical: int = 0


@dataclass
class ErrorRecord:
    error_id: int
    state: FpState
    total: int = 1
    description: str = ""


@dataclass
class _Flow:
    """What a customer's hand does: the trigger held at a rate, let go at a figure."""

    rate_lps: Decimal
    stop_volume: Decimal | None = None
    stop_amount: Decimal | None = None


class FuellingPoint:
    """One FP: its state, nozzles, the running sale and its transaction buffer."""

    def __init__(self, number: int, spec: FpSpec, node: DispenserSpec, first_meter: int) -> None:
        self.number = number
        self.name = spec.name or f"FP {number}"
        self.state = node.start_state
        self.nozzles = {
            n: Nozzle(
                n,
                s.product,
                s.volume_total.quantize(_places(node.volume_decimals)),
                s.amount_total.quantize(_places(node.amount_decimals)),
                meter=first_meter + n - 1,
                physical=n,
            )
            for n, s in enumerate(spec.nozzles, start=1)
        }
        self.unpaid_limit = node.unpaid_limit
        self.history = node.history
        self.default_mode = 1
        self.fuelling_mode = 1
        self.assign_controller = NO_LNA
        self.release_controller = NO_LNA
        self.suspend_controller = NO_LNA
        self.release_mode = 0
        self.zero_tr_mode = 0
        self.config_lock = 0
        self.release_token = 0
        self.running_frequency = node.running_frequency
        self.mask = (1 << len(self.nozzles)) - 1  # Log_Noz_Mask: every nozzle until written
        self.amount_prepay: Decimal | None = None  # 1Bh, written for the next release
        self.volume_preset: Decimal | None = None  # 1Ch
        self.authorised_amount: Decimal | None = None  # the preset of the running release
        self.authorised_volume: Decimal | None = None
        self.authorised_mask = self.mask
        self.released_at: float | None = None
        self.nozzle_out: int | None = None
        self.engaged = False  # the nozzle out is the one the FP serves
        self.flow: _Flow | None = None
        self.raw_volume = Decimal(0)  # unrounded volume of the running sale
        self.volume = Decimal(0)
        self.amount = Decimal(0)
        self.unit_price = Decimal(0)
        self.current_nozzle = 0
        self.current_seq = 0  # Current_TR_Seq_Nb: the running / last sale's
        self.last_seq = 0
        self.transactions: dict[int, Transaction] = {}
        self.errors: dict[int, ErrorRecord] = {}
        self.last_running_at: float | None = None
        self.sale_offline = False

    # -------------------------------------------------------------- derived
    @property
    def nozzle_bits(self) -> int:
        return 0 if self.nozzle_out is None else 1 << (self.nozzle_out - 1)

    def unpaid(self) -> list[Transaction]:
        return [t for t in self.transactions.values() if t.state is not TrState.CLEARED]

    def next_seq(self) -> int:
        """TR_Seq_Nb after the last, wrapping 9999 -> 0001, skipping any still held."""
        seq = self.last_seq
        for _ in range(MAX_SEQ):
            seq = 1 if seq >= MAX_SEQ else seq + 1
            if seq not in self.transactions:
                return seq
        raise DispenserError("every TR_Seq_Nb is in use")  # unreachable: history is bounded

    def fire(self, event: FpEvent) -> tuple[FpState, FpState]:
        """Apply `event`: (old, new) state; IllegalTransition when not allowed."""
        old = self.state
        self.state = fp_next(old, event)
        return old, self.state


def _places(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def _fits(value: Decimal, decimals: int, digits: int) -> bool:
    """Whether `value` is a non-negative figure of at most `decimals` places that a bcd of
    `digits` digits shows (a preset the display cannot show is refused, Data_Ack 1)."""
    if value < 0 or value >= Decimal(10) ** (digits - decimals):
        return False
    return value == value.quantize(_places(decimals))


# ======================================================================================
# The node
# ======================================================================================
class Dispenser:
    """One IFSF dispenser node: every database of it, its FPs and their sales."""

    def __init__(self, spec: DispenserSpec, *, now: float = 0.0) -> None:
        self.spec = spec
        self.dialect = spec.dialect
        self.lna = spec.lna
        self._vq = _places(spec.volume_decimals)
        self._aq = _places(spec.amount_decimals)
        self.heartbeat_interval = spec.heartbeat_interval
        self._max_amount = Decimal(10) ** (8 - spec.amount_decimals) - self._aq
        self.recipients: list[Lna] = list(spec.recipients)
        self.auth_state_mode = spec.auth_state_mode
        self.stand_alone_auth = 0
        self.max_auth_time = spec.max_auth_time
        self.min_fuelling_vol = 0
        self.min_display_vol = 0
        self.c_dat_other: dict[int, bytes] = {}
        self.products = [_Product(p.number, p.name) for p in spec.products]  # PR_ID index - 1
        self.prices: dict[tuple[int, int], Decimal] = {
            (p.number, mode): price for p in spec.products for mode, price in p.prices.items()
        }
        self.mode_other: dict[tuple[int, int, int], bytes] = {}
        self.fps: dict[int, FuellingPoint] = {}
        meter = 1
        for number, fp_spec in enumerate(spec.fps, start=1):
            point = self.fps[number] = FuellingPoint(number, fp_spec, spec, meter)
            point.volume, point.amount = (
                Decimal(0).quantize(self._vq),
                Decimal(0).quantize(self._aq),
            )
            meter += len(fp_spec.nozzles)
        self.cd_online = True
        self.offline: list[OfflineSale] = []
        self._offline_seq = 0
        self._refusing = 0
        self._refusal_code = MS_BUSY
        self._price_fault: Literal["refuse", "ignore"] | None = None
        self._price_ack = ACK_NOT_WRITABLE
        self._now = now
        self.received = 0

    # ================================================================== what others see
    @property
    def heartbeat_status(self) -> int:
        if self.dialect.configuration_needed_bit and any(
            fp.state in (S.INOPERATIVE, S.CLOSED) for fp in self.fps.values()
        ):
            return STATUS_CONFIGURATION_NEEDED
        return 0

    def price(self, product: int, mode: int = 1) -> Decimal:
        """The unit price of product `product` (PR_ID index) in fuelling mode `mode`."""
        number = self.products[product - 1].number
        found = self.prices.get((number, mode))
        return Decimal(0) if found is None else found

    # ================================================================== faults
    def refuse(self, count: int, code: int = MS_BUSY) -> None:
        """Answer the next `count` writes with MS_ACK `code` (7 busy, 2 out of order ...)."""
        self._refusing = count
        self._refusal_code = code

    @property
    def refusing(self) -> int:
        return self._refusing

    def spoil_prices(
        self, how: Literal["refuse", "ignore"] | None, data_ack: int = ACK_NOT_WRITABLE
    ) -> None:
        """Prod_Price writes from now on: "refuse" answers MS_ACK 5 with `data_ack` for the
        price and keeps the old one (a dispenser whose prices are locked at its keypad);
        "ignore" acks them and keeps the old one (a price only its read-back shows was not
        taken); None takes them again."""
        self._price_fault = how
        self._price_ack = data_ack

    def set_cd_online(self, online: bool) -> None:
        """Whether a CD is there (the network layer hears its heartbeat). With offline
        sales (Dialect), an FP serves a lifted nozzle on its own while none is."""
        self.cd_online = online

    def fault(self, fp: int, error_id: int, now: float) -> list[Message]:
        """A fault at the FP: it goes Inoperative (ending a running sale) and reports it."""
        point = self._fp_or_raise(fp)
        out = self.tick(now)
        was = point.state
        if point.state in _SALE_RUNNING:
            out += self._end_sale(point, now, event=FpEvent.FAULT)
        else:
            self._drop_authorisation(point)
            out += self._fire(point, FpEvent.FAULT, now)
        return out + self._record_error(point, error_id, was)

    def power_cut(self, now: float) -> list[Message]:
        """The mains go: a running sale is stored, every FP closes (the CD opens it again);
        sales, totals and the recipients stay, as a dispenser's battery-backed memory keeps
        them. A nozzle out is ignored until it is hung up."""
        out = self.tick(now)
        for point in self.fps.values():
            point.flow = None
            if point.state in _SALE_RUNNING:
                out += self._end_sale(point, now, event=FpEvent.CLOSE)
            elif (point.state, FpEvent.CLOSE) in FP_TRANSITIONS:
                self._drop_authorisation(point)
                out += self._fire(point, FpEvent.CLOSE, now)
            point.engaged = False
        self._refusing = 0
        return out

    def recover(self, fp: int, now: float) -> list[Message]:
        """The fault is cleared: Inoperative -> Closed (the CD opens it again)."""
        return self._fire(self._fp_or_raise(fp), FpEvent.RECOVER, now)

    # ================================================================== the CD's messages
    def receive(self, message: Message, now: float) -> list[Message]:
        """The node's answer to one message from a CD, then what it sends unsolicited
        because of it. Never raises: every refusal is an MS_ACK code."""
        self.received += 1
        out = self.tick(now)
        body = message.body
        if not isinstance(body, Read | Write):
            return out  # acks, answers and unsolicited data from a CD need no answer
        if message.recipient != self.lna:
            return [*out, self._ack(message, MS_UNKNOWN_NODE)]
        if isinstance(body, Write) and self._refusing:
            self._refusing -= 1
            return [*out, self._ack(message, self._refusal_code)]
        if isinstance(body, Read):
            return out + self._read(message, body)
        return out + self._write(message, body, now)

    def _ack(
        self, message: Message, status: int, acks: Iterable[DataAck] = (), address: Any = None
    ) -> Message:
        return Message(
            message.originator,
            self.lna,
            message.token,
            message.database if address is None else address,
            Ack(status, tuple(acks)),
        )

    def _answer(self, message: Message, address: db.Address, items: list[DataItem]) -> Message:
        return Message(message.originator, self.lna, message.token, address, Answer(tuple(items)))

    # ------------------------------------------------------------------ reads
    def _read(self, message: Message, body: Read) -> list[Message]:
        address = message.database
        if (
            isinstance(address, db.TransactionBuffer)
            and self.dialect.offline_sales
            and 0xC8 in body.data_ids
            and not address.every
            and address.fp == 0
        ):
            return self._read_offline(message)
        targets = self._expand(address)
        if targets is None:
            return [self._ack(message, MS_UNKNOWN_ADDRESS)]
        out: list[Message] = []
        for target in targets:
            values = self._values(target)
            items: list[DataItem] = []
            missing: list[int] = []
            for data_id in body.data_ids:
                if data_id in values:
                    items.append(codec.item(target, data_id, values[data_id]))
                else:
                    missing.append(data_id)
            if items or not body.data_ids:
                out.append(self._answer(message, target, items))
            else:  # nothing asked for exists here
                acks = [DataAck(d, ACK_NO_DATA) for d in missing]
                out.append(self._ack(message, MS_DATA_REFUSED, acks, target))
        if _is_wildcard(address):
            out.append(self._ack(message, MS_OK))
        return out

    def _expand(self, address: db.Address) -> list[db.Address] | None:
        """The concrete addresses `address` names (several for a wildcard, none for a TR
        wildcard with no unpaid sale); None if it names nothing this node has."""
        fps = self._fps_of(getattr(address, "fp", None))
        match address:
            case db.ComSv() | db.CDat():
                return [address]
            case db.FuellingPoint():
                return [db.FuellingPoint(f.number) for f in fps] if fps else None
            case db.LogicalNozzle(nozzle=nozzle):
                found: list[db.Address] = [
                    db.LogicalNozzle(f.number, n)
                    for f in fps
                    for n in f.nozzles
                    if nozzle in (0, n)
                ]
                return found or None
            case db.TransactionBuffer(seq=seq, every=every):
                if not fps:
                    return None
                if every:
                    return [
                        db.TransactionBuffer(f.number, t.seq)
                        for f in fps
                        for t in sorted(f.unpaid(), key=lambda t: t.seq)
                    ]
                held: list[db.Address] = [
                    db.TransactionBuffer(f.number, seq) for f in fps if seq in f.transactions
                ]
                return held or None
            case db.ErrorEntry(error_id=error_id):
                found_errors: list[db.Address] = [
                    db.ErrorEntry(f.number, error_id) for f in fps if error_id in f.errors
                ]
                return found_errors or None
            case db.Product(pr=pr):
                if pr == 0:
                    return [db.Product(i) for i in range(1, len(self.products) + 1)]
                return [address] if pr <= len(self.products) else None
            case db.ProductPerMode(prod_nb=prod_nb, mode=mode):
                modes = sorted(m for (n, m) in self.prices if n == prod_nb and mode in (0, m))
                return [db.ProductPerMode(prod_nb, m) for m in modes] or None
            case db.Meter(meter=meter):
                meters = [n.meter for f in self.fps.values() for n in f.nozzles.values()]
                if meter == 0:
                    return [db.Meter(m) for m in meters]
                return [address] if meter in meters else None
        return None

    def _fps_of(self, fp: int | None) -> list[FuellingPoint]:
        if fp is None:
            return []
        if fp == 0:
            return list(self.fps.values())
        found = self.fps.get(fp)
        return [] if found is None else [found]

    def _values(self, address: db.Address) -> dict[int, Any]:
        """Every readable data id of one concrete address, with its typed value."""
        match address:
            case db.ComSv():
                return {
                    0x01: 1_000_000,
                    0x02: self.lna,
                    0x03: tuple(self.recipients),
                    0x04: self.heartbeat_interval,
                }
            case db.CDat():
                return {
                    0x02: len(self.products),
                    0x03: len({m for (_n, m) in self.prices}) or 1,
                    0x04: sum(len(f.nozzles) for f in self.fps.values()),
                    0x05: len(self.fps),
                    0x0B: self.auth_state_mode,
                    0x0C: self.stand_alone_auth,
                    0x0D: self.max_auth_time,
                    0x16: self.min_fuelling_vol,
                    0x17: self.min_display_vol,
                    **{d: db.decode_value(address, d, raw) for d, raw in self.c_dat_other.items()},
                }
            case db.FuellingPoint(fp=number):
                return self._fp_values(self.fps[number])
            case db.LogicalNozzle(fp=number, nozzle=n):
                nozzle = self.fps[number].nozzles[n]
                return {
                    0x01: nozzle.product,
                    0x05: nozzle.physical,
                    0x07: nozzle.meter,
                    0x14: nozzle.volume_total,
                    0x15: nozzle.amount_total,
                    0x16: Decimal(nozzle.sales),
                }
            case db.TransactionBuffer(fp=number, seq=seq):
                return self._tr_values(self.fps[number].transactions[seq])
            case db.ErrorEntry(fp=number, error_id=error_id):
                error = self.fps[number].errors[error_id]
                return {
                    0x01: error.error_id,
                    0x02: error.description or db.ERROR_CODES.get(error.error_id, "")[:20],
                    0x03: error.total,
                    0x05: int(error.state),
                }
            case db.Product(pr=pr):
                product = self.products[pr - 1]
                return {0x02: product.number, 0x03: product.name[:16]}
            case db.ProductPerMode(prod_nb=prod_nb, mode=mode):
                values: dict[int, Any] = {0x02: self.prices[(prod_nb, mode)]}
                for (n, m, d), raw in self.mode_other.items():
                    if (n, m) == (prod_nb, mode):
                        values[d] = db.decode_value(address, d, raw)
                return values
            case db.Meter(meter=meter):
                for fp in self.fps.values():
                    for nozzle in fp.nozzles.values():
                        if nozzle.meter == meter:
                            return {0x01: 0, 0x04: nozzle.product, 0x14: nozzle.volume_total}
        return {}

    def _fp_values(self, fp: FuellingPoint) -> dict[int, Any]:
        price = self._current_price(fp)
        nozzle = fp.current_nozzle or (fp.nozzle_out or 0)
        prod_nb = self.products[fp.nozzles[nozzle].product - 1].number if nozzle else 0
        return {
            0x01: fp.name[:8],
            0x02: fp.unpaid_limit,
            0x03: fp.history,
            0x04: len(fp.nozzles),
            0x07: fp.default_mode,
            0x14: int(fp.state),
            0x15: fp.nozzle_bits,
            0x16: fp.assign_controller,
            0x17: fp.release_mode,
            0x18: fp.zero_tr_mode,
            0x19: fp.mask,
            0x1A: fp.config_lock,
            0x1B: fp.amount_prepay
            if fp.amount_prepay is not None
            else Decimal("0").quantize(self._aq),
            0x1C: fp.volume_preset
            if fp.volume_preset is not None
            else Decimal("0").quantize(self._vq),
            0x1D: fp.current_seq,
            0x1E: fp.release_controller,
            0x1F: fp.suspend_controller,
            0x20: fp.release_token,
            0x21: fp.fuelling_mode,
            0x22: fp.amount.quantize(self._aq),
            0x23: fp.volume.quantize(self._vq),
            0x24: price,
            0x25: nozzle,
            0x26: int(prod_nb),
            0x27: 0,
            0x29: fp.last_seq,
            0x3B: fp.running_frequency,
        }

    def _current_price(self, fp: FuellingPoint) -> Decimal:
        if fp.state in (S.STARTED, S.SUSPENDED_STARTED, *_SALE_RUNNING):
            return fp.unit_price
        nozzle = fp.nozzle_out or fp.current_nozzle
        if nozzle:
            return self.price(fp.nozzles[nozzle].product, fp.fuelling_mode)
        return fp.unit_price

    def _tr_values(self, tr: Transaction) -> dict[int, Any]:
        return {
            0x01: tr.seq,
            0x02: tr.release_controller,
            0x04: tr.fuelling_mode,
            0x05: tr.amount,
            0x06: tr.volume,
            0x07: tr.unit_price,
            0x08: tr.nozzle,
            0x0A: tr.prod_nb,
            0x0C: tr.error_code,
            0x14: tr.controller,
            0x15: int(tr.state),
        }

    # ------------------------------------------------------------------ writes
    def _write(self, message: Message, body: Write, now: float) -> list[Message]:
        address = message.database
        if isinstance(address, db.TransactionBuffer) and self.dialect.offline_sales:
            offline = self._remove_offline(message, body)
            if offline is not None:
                return offline
        targets = self._expand(address)
        if (
            isinstance(address, db.ProductPerMode)
            and address.mode
            and any(p.number == address.prod_nb for p in self.products)
        ):
            targets = [address]  # a product's price in a mode it had none in yet
        if (
            targets is None
            or not targets
            or (isinstance(address, db.TransactionBuffer) and address.every)
        ):
            return [self._ack(message, MS_UNKNOWN_ADDRESS)]
        acks: dict[int, int] = {}
        after: list[Message] = []
        locked_by_other = False
        for target in targets:
            for data in body.items:
                try:
                    result = self._write_item(target, data, message.originator, now, after)
                except _LockedByOther:
                    locked_by_other = True
                    result = ACK_WRONG_STATE
                acks[data.data_id] = max(acks.get(data.data_id, ACK_OK), result)
        if locked_by_other:
            return [self._ack(message, MS_ALREADY_LOCKED), *after]
        if all(code == ACK_OK for code in acks.values()):
            return [self._ack(message, MS_OK), *after]
        pairs = [DataAck(data.data_id, acks[data.data_id]) for data in body.items]
        return [self._ack(message, MS_DATA_REFUSED, pairs), *after]

    def _write_item(
        self, address: db.Address, data: DataItem, sender: Lna, now: float, out: list[Message]
    ) -> int:
        """Apply one written item; its data ack. Unsolicited messages go to `out`."""
        field_ = db.field_for(address, data.data_id)
        if field_ is None:
            return ACK_NO_DATA
        try:
            value = field_.encoding.decode(data.data)
        except FrameError:
            return ACK_INVALID
        match address:
            case db.ComSv():
                return self._write_com_sv(data.data_id, value)
            case db.CDat():
                return self._write_c_dat(data.data_id, value, data.data)
            case db.FuellingPoint(fp=number):
                return self._write_fp(self.fps[number], data.data_id, value, sender, now, out)
            case db.LogicalNozzle(fp=number, nozzle=n):
                return self._write_nozzle(self.fps[number], n, data.data_id, value)
            case db.TransactionBuffer(fp=number, seq=seq):
                return self._write_tr(self.fps[number], seq, data.data_id, sender, out)
            case db.Product(pr=pr):
                return self._write_product(pr, data.data_id, value)
            case db.ProductPerMode(prod_nb=prod_nb, mode=mode):
                return self._write_price(prod_nb, mode, data.data_id, value, data.data, now, out)
        return ACK_NOT_WRITABLE  # meters, error entries

    def _write_com_sv(self, data_id: int, value: Any) -> int:
        if data_id == 0x04:
            if not 1 <= value <= 255:
                return ACK_INVALID
            self.heartbeat_interval = value
            return ACK_OK
        if data_id in (0x0B, 0x0C):
            lna = value.lna if isinstance(value, Heartbeat) else value
            if data_id == 0x0B and lna not in self.recipients:
                if len(self.recipients) >= 64:
                    return ACK_INVALID
                self.recipients.append(lna)
            elif data_id == 0x0C and lna in self.recipients:
                self.recipients.remove(lna)
            return ACK_OK
        return ACK_NOT_WRITABLE

    def _write_c_dat(self, data_id: int, value: Any, raw: bytes) -> int:
        if data_id in (0x02, 0x03, 0x04, 0x05):
            return ACK_NOT_WRITABLE  # what the hardware has
        if data_id in (0x0B, 0x0C):
            if value not in (0, 1):
                return ACK_INVALID
            if data_id == 0x0B:
                self.auth_state_mode = value
            else:
                self.stand_alone_auth = value
            return ACK_OK
        if data_id == 0x0D:
            self.max_auth_time = value
        elif data_id == 0x16:
            self.min_fuelling_vol = value
        elif data_id == 0x17:
            self.min_display_vol = value
        else:
            self.c_dat_other[data_id] = raw
        return ACK_OK

    _FP_CONFIG: Final = frozenset({0x01, 0x02, 0x03, 0x07, 0x17, 0x18, 0x1A})
    _FP_READ_ONLY: Final = frozenset(
        {0x04, 0x14, 0x15, 0x1D, *range(0x22, 0x2E), 0x29, 0x43, 0x50, 0x64, 0x65, 0x66}
    )

    def _write_fp(
        self,
        fp: FuellingPoint,
        data_id: int,
        value: Any,
        sender: Lna,
        now: float,
        out: list[Message],
    ) -> int:
        command = FP_COMMANDS.get(data_id)
        if command is not None:
            return self._fp_command(fp, command, sender, now, out)
        if data_id in self._FP_READ_ONLY:
            return ACK_NOT_WRITABLE
        if data_id in self._FP_CONFIG:
            if fp.state not in (S.INOPERATIVE, S.CLOSED):
                return ACK_NOT_WRITABLE
            return self._fp_config(fp, data_id, value)
        match data_id:
            case 0x16:
                fp.assign_controller = value
            case 0x19:
                if value & ~((1 << len(fp.nozzles)) - 1) or not value:
                    return ACK_INVALID
                fp.mask = value
            case 0x1B | 0x1C:
                decimals = (
                    self.spec.amount_decimals if data_id == 0x1B else self.spec.volume_decimals
                )
                if not _fits(value, decimals, 8):
                    return ACK_INVALID
                preset = value if value > 0 else None
                if data_id == 0x1B:
                    fp.amount_prepay = preset
                else:
                    fp.volume_preset = preset
            case 0x1E:
                fp.release_controller = value
            case 0x1F:
                fp.suspend_controller = value
            case 0x20:
                fp.release_token = value
            case 0x21:
                if not 1 <= value <= 8:
                    return ACK_INVALID
                fp.fuelling_mode = value
            case 0x3B:
                fp.running_frequency = value
            case _:
                return ACK_NOT_WRITABLE
        return ACK_OK

    def _fp_config(self, fp: FuellingPoint, data_id: int, value: Any) -> int:
        match data_id:
            case 0x01:
                fp.name = str(value).rstrip()
            case 0x02:
                if not 1 <= value <= 15:
                    return ACK_INVALID
                fp.unpaid_limit = value
            case 0x03:
                fp.history = value
            case 0x07:
                if not 1 <= value <= 8:
                    return ACK_INVALID
                fp.default_mode = fp.fuelling_mode = value
            case 0x17:
                fp.release_mode = value
            case 0x18:
                fp.zero_tr_mode = value
            case 0x1A:
                fp.config_lock = value
        return ACK_OK

    def _fp_command(
        self, fp: FuellingPoint, command: FpEvent, sender: Lna, now: float, out: list[Message]
    ) -> int:
        if command is FpEvent.RELEASE:
            refused = self._release_refused(fp)
            if refused is not None:
                return refused
        try:
            fp_next(fp.state, command)
        except IllegalTransition:
            return ACK_WRONG_STATE
        match command:
            case FpEvent.RELEASE:
                out += self._release(fp, sender, now)
            case FpEvent.TERMINATE | FpEvent.CLOSE:
                if fp.state in _SALE_RUNNING:
                    out += self._end_sale(fp, now, event=command)
                else:
                    self._drop_authorisation(fp)
                    out += self._fire(fp, command, now)
            case FpEvent.SUSPEND:
                fp.suspend_controller = sender
                out += self._fire(fp, command, now)
            case _:
                out += self._fire(fp, command, now)
        return ACK_OK

    def _release_refused(self, fp: FuellingPoint) -> int | None:
        if len(fp.unpaid()) >= fp.unpaid_limit:
            return self.dialect.unpaid_limit_ack
        if fp.state is S.IDLE and self.auth_state_mode == 1:
            return ACK_WRONG_STATE  # pre-authorisation forbidden (C_DAT Auth_State_Mode)
        calling = fp.state is S.CALLING and fp.nozzle_out is not None
        if calling and not fp.mask >> ((fp.nozzle_out or 1) - 1) & 1:
            return ACK_NOT_ACCEPTED  # the lifted nozzle is not one the release allows
        return None

    def _release(self, fp: FuellingPoint, sender: Lna, now: float) -> list[Message]:
        fp.authorised_amount, fp.authorised_volume = fp.amount_prepay, fp.volume_preset
        fp.amount_prepay = fp.volume_preset = None  # a preset serves one release
        fp.authorised_mask = fp.mask
        if fp.release_controller == NO_LNA:
            fp.release_controller = sender
        fp.released_at = now
        return self._fire(fp, FpEvent.RELEASE, now)

    def _drop_authorisation(self, fp: FuellingPoint) -> None:
        fp.authorised_amount = fp.authorised_volume = None
        fp.released_at = None

    def _write_nozzle(self, fp: FuellingPoint, n: int, data_id: int, value: Any) -> int:
        nozzle = fp.nozzles[n]
        if data_id not in (0x01, 0x05, 0x07):
            return ACK_NOT_WRITABLE
        if fp.state not in (S.INOPERATIVE, S.CLOSED):
            return ACK_NOT_WRITABLE
        if data_id == 0x01:
            if not 1 <= value <= len(self.products):
                return ACK_INVALID
            nozzle.product = value
        elif data_id == 0x05:
            nozzle.physical = value
        else:
            nozzle.meter = value
        return ACK_OK

    def _write_tr(
        self, fp: FuellingPoint, seq: int, data_id: int, sender: Lna, out: list[Message]
    ) -> int:
        command = TR_COMMANDS.get(data_id)
        if command is None:
            return ACK_NOT_WRITABLE
        tr = fp.transactions[seq]
        if (
            command is TrCommand.LOCK
            and tr.state is TrState.LOCKED
            and tr.controller not in (sender, NO_LNA)
        ):
            raise _LockedByOther
        try:
            new = tr_next(tr.state, command)
        except IllegalTransaction:
            return ACK_WRONG_STATE
        if command is TrCommand.UNLOCK and self.dialect.unlock_to_cleared:
            new = TrState.CLEARED
        tr.state = new
        tr.controller = sender if command is TrCommand.LOCK else tr.controller
        if new is TrState.CLEARED:
            self._trim_history(fp)
        out += self._emit(db.TransactionBuffer(fp.number, tr.seq), self._tr_items(fp, tr))
        return ACK_OK

    def _trim_history(self, fp: FuellingPoint) -> None:
        # The buffer keeps sales in the order they were stored: oldest first, across a wrap.
        cleared = [t for t in fp.transactions.values() if t.state is TrState.CLEARED]
        for tr in cleared[: max(0, len(cleared) - fp.history)]:
            del fp.transactions[tr.seq]

    def _write_product(self, pr: int, data_id: int, value: Any) -> int:
        product = self.products[pr - 1]
        if data_id == 0x02:
            old = product.number
            product.number = value
            for (number, mode), price in list(self.prices.items()):
                if number == old:
                    del self.prices[(number, mode)]
                    self.prices[(value, mode)] = price
            return ACK_OK
        if data_id == 0x03:
            product.name = str(value).rstrip()
            return ACK_OK
        return ACK_NOT_WRITABLE

    def _write_price(
        self,
        prod_nb: int,
        mode: int,
        data_id: int,
        value: Any,
        raw: bytes,
        now: float,
        out: list[Message],
    ) -> int:
        if data_id != 0x02:
            self.mode_other[(prod_nb, mode, data_id)] = raw
            return ACK_OK
        if value <= 0 or not _fits(value, PRICE_DECIMALS, 6):
            return ACK_INVALID
        if self._price_fault == "refuse":
            return self._price_ack
        if self._price_fault == "ignore":
            return ACK_OK
        self.prices[(prod_nb, mode)] = value
        if self.dialect.price_change_error:
            index = next((i for i, p in enumerate(self.products, 1) if p.number == prod_nb), 0)
            for fp in self.fps.values():
                if any(n.product == index for n in fp.nozzles.values()):
                    out += self._record_error(fp, ERROR_PRICE_CHANGED)
        return ACK_OK

    # ------------------------------------------------------------------ offline sales
    def _read_offline(self, message: Message) -> list[Message]:
        """Every offline sale, oldest first, each on its own TR address, then the ack that
        says there is no more (on the dialect's address): a CD that reads them all and one
        that reads, removes (C9h) and reads again are both served."""
        out = []
        for sale in self.offline:
            address = db.TransactionBuffer(sale.fp, sale.seq)
            values = {
                **self._tr_values(sale.transaction),
                0xCA: sale.when.strftime("%Y%m%d"),
                0xCB: sale.when.strftime("%H%M%S"),
                0xCC: sale.start_total,
                0xCD: sale.end_total,
            }
            items = [codec.item(address, d, v) for d, v in values.items()]
            out.append(self._answer(message, address, items))
        # "No more": ZSY acks on 21 20 0000, SINOPEC on 20 21 0000.
        end = (
            db.TransactionBuffer(1, 0, every=True)
            if self.dialect.offline_end == "tr_every"
            else db.TransactionBuffer(0, 0)
        )
        return [*out, self._ack(message, MS_OK, address=end)]

    def _remove_offline(self, message: Message, body: Write) -> list[Message] | None:
        address = message.database
        assert isinstance(address, db.TransactionBuffer)
        if not any(data.data_id == 0xC9 for data in body.items):
            return None
        for sale in self.offline:
            if (sale.fp, sale.seq) == (address.fp, address.seq):
                self.offline.remove(sale)
                return [self._ack(message, MS_OK)]
        return [self._ack(message, MS_UNKNOWN_ADDRESS)]

    # ================================================================== at the pump
    def lift(self, fp: int, nozzle: int, now: float) -> list[Message]:
        """A customer takes nozzle `nozzle` out of its holster."""
        point = self._fp_or_raise(fp)
        if nozzle not in point.nozzles:
            raise CustomerError(f"FP {fp} has no logical nozzle {nozzle}")
        if point.nozzle_out is not None:
            raise CustomerError(f"FP {fp}: nozzle {point.nozzle_out} is out already")
        out = self.tick(now)
        point.nozzle_out = nozzle
        allowed = point.authorised_mask >> (nozzle - 1) & 1
        if point.state is S.IDLE and self._serves_offline():
            # No CD: the FP authorises itself (SINOPEC's local authorisation).
            point.engaged = True
            point.sale_offline = True
            out += self._fire(point, FpEvent.LIFT, now)
            point.release_controller = NO_LNA
            point.authorised_mask = point.mask
            out += self._release(point, NO_LNA, now)
            return out
        if point.state is S.IDLE or (point.state is S.AUTHORISED and allowed):
            point.engaged = True
            return out + self._fire(point, FpEvent.LIFT, now)
        point.engaged = False  # the FP ignores this nozzle
        return out + self._status(point)

    def squeeze(
        self,
        fp: int,
        now: float,
        *,
        rate_lps: Decimal | None = None,
        stop_volume: Decimal | None = None,
        stop_amount: Decimal | None = None,
    ) -> list[Message]:
        """The customer holds the trigger, letting go at `stop_volume`/`stop_amount` if
        given. Fuel flows only while the FP is released for the nozzle out."""
        point = self._fp_or_raise(fp)
        if point.nozzle_out is None:
            raise CustomerError(f"FP {fp}: no nozzle is out")
        out = self.tick(now)
        point.flow = _Flow(rate_lps or self.spec.flow_rate_lps, stop_volume, stop_amount)
        return out

    def let_go(self, fp: int, now: float) -> list[Message]:
        point = self._fp_or_raise(fp)
        out = self.tick(now)
        point.flow = None
        return out

    def hang_up(self, fp: int, now: float) -> list[Message]:
        """The nozzle goes back: a sale with fuel is stored, one without ends."""
        point = self._fp_or_raise(fp)
        if point.nozzle_out is None:
            raise CustomerError(f"FP {fp}: no nozzle is out")
        out = self.tick(now)
        point.flow = None
        point.nozzle_out = None
        if not point.engaged:
            return out + self._status(point)
        point.engaged = False
        if point.state in _SALE_RUNNING:
            return out + self._end_sale(point, now, event=FpEvent.HANG_UP)
        if (point.state, FpEvent.HANG_UP) in FP_TRANSITIONS:
            self._drop_authorisation(point)
            return out + self._fire(point, FpEvent.HANG_UP, now)
        return out + self._status(point)

    def _serves_offline(self) -> bool:
        return self.dialect.offline_sales and not self.cd_online

    # ================================================================== time
    def tick(self, now: float) -> list[Message]:
        """Let the fuel flow up to `now`: running messages, presets reached, timeouts."""
        dt = Decimal(max(0.0, now - self._now))
        self._now = max(self._now, now)
        out: list[Message] = []
        for fp in self.fps.values():
            out += self._advance(fp, dt, now)
        return out

    def _advance(self, fp: FuellingPoint, dt: Decimal, now: float) -> list[Message]:
        out: list[Message] = []
        flowing = fp.flow is not None and fp.engaged and fp.state in (S.STARTED, S.FUELLING)
        if fp.flow is not None and flowing and dt > 0:
            fp.raw_volume += fp.flow.rate_lps * dt
            ended = self._meter(fp)
            if fp.state is S.STARTED and fp.volume > 0:
                out += self._fire(fp, FpEvent.FLOW, now)
                fp.last_running_at = None
            if ended == "preset":
                return out + self._end_sale(fp, now, event=FpEvent.FILL_END)
            if ended == "hand":
                fp.flow = None
        if fp.state is S.FUELLING:
            out += self._running(fp, now)
        if (
            fp.state in (S.AUTHORISED, S.STARTED)
            and self.max_auth_time
            and fp.released_at is not None
            and now - fp.released_at >= self.max_auth_time * 10
        ):
            was = fp.state
            self._drop_authorisation(fp)
            out += self._fire(fp, FpEvent.AUTH_TIMEOUT, now)
            out += self._record_error(fp, ERROR_AUTH_TIMEOUT, was)
        return out

    def _meter(self, fp: FuellingPoint) -> str | None:
        """Display the running sale's figures; which limit stopped the flow, if one did
        ("preset": the release's; "hand": the customer let go at their figure)."""
        assert fp.flow is not None
        price = fp.unit_price
        # Each limit as the volume it is reached at: (volume, reason, amount limit or None).
        limits: list[tuple[Decimal, str, Decimal | None]] = []
        volumes = (
            (fp.authorised_volume, "preset"),
            (fp.flow.stop_volume, "hand"),
            (self.spec.max_fill_volume, "preset"),
        )
        for volume, why in volumes:
            if volume is not None:
                limits.append((volume, why, None))
        amounts = (
            (fp.authorised_amount, "preset"),
            (fp.flow.stop_amount, "hand"),
            (self._max_amount, "preset"),
        )
        for amount, why in amounts:
            if amount is not None and price > 0:
                limits.append((amount / price, why, amount))
        reached = [limit for limit in limits if fp.raw_volume >= limit[0]]
        if reached:
            volume, why, amount = min(reached, key=lambda limit: limit[0])
            fp.raw_volume = volume
            fp.volume = volume.quantize(self._vq, ROUND_HALF_UP)
            if amount is not None:
                fp.amount = amount.quantize(self._aq)
            else:
                fp.amount = (fp.volume * price).quantize(self._aq, ROUND_HALF_UP)
            return why
        fp.volume = fp.raw_volume.quantize(self._vq, ROUND_DOWN)
        fp.amount = (fp.volume * price).quantize(self._aq, ROUND_HALF_UP)
        return None

    def _running(self, fp: FuellingPoint, now: float) -> list[Message]:
        if not fp.running_frequency:
            return []
        every = fp.running_frequency * self.dialect.running_message_unit_s
        if fp.last_running_at is not None and now - fp.last_running_at < every:
            return []
        fp.last_running_at = now
        address = db.FuellingPoint(fp.number)
        items = [codec.item(address, 0x66)]
        if self.dialect.nozzle_in_running_message:
            items.append(codec.item(address, 0x25, fp.current_nozzle))
        items += [
            codec.item(address, 0x22, fp.amount.quantize(self._aq)),
            codec.item(address, 0x23, fp.volume.quantize(self._vq)),
        ]
        return self._emit(address, items)

    # ================================================================== sales
    def _start_sale(self, fp: FuellingPoint, now: float) -> None:
        assert fp.nozzle_out is not None
        fp.current_nozzle = fp.nozzle_out
        fp.unit_price = self.price(fp.nozzles[fp.nozzle_out].product, fp.fuelling_mode)
        fp.raw_volume = Decimal(0)
        fp.volume = Decimal(0).quantize(self._vq)
        fp.amount = Decimal(0).quantize(self._aq)
        fp.current_seq = fp.next_seq()

    def _end_sale(self, fp: FuellingPoint, now: float, event: FpEvent) -> list[Message]:
        """Store the running sale as Payable, add it to the nozzle's totals, end the fill."""
        nozzle = fp.nozzles[fp.current_nozzle]
        start_total = nozzle.volume_total
        nozzle.volume_total += fp.volume
        nozzle.amount_total += fp.amount
        nozzle.sales += 1
        product = self.products[nozzle.product - 1]
        tr = Transaction(
            seq=fp.current_seq,
            nozzle=nozzle.number,
            product=nozzle.product,
            prod_nb=product.number,
            unit_price=fp.unit_price,
            volume=fp.volume.quantize(self._vq),
            amount=fp.amount.quantize(self._aq),
            release_controller=fp.release_controller,
            controller=fp.release_controller,
            fuelling_mode=fp.fuelling_mode,
        )
        fp.flow = None
        self._drop_authorisation(fp)
        out = self._fire(fp, event, now)
        fp.last_seq = tr.seq
        fp.release_controller = NO_LNA
        if fp.sale_offline:
            fp.sale_offline = False
            self._offline_seq = self._offline_seq % MAX_SEQ + 1
            self.offline.append(
                OfflineSale(
                    self._offline_seq,
                    fp.number,
                    replace(tr),
                    datetime.fromtimestamp(now, UTC),
                    start_total,
                    nozzle.volume_total,
                )
            )
            return out
        fp.transactions[tr.seq] = tr
        return out + self._emit(db.TransactionBuffer(fp.number, tr.seq), self._tr_items(fp, tr))

    def _tr_items(self, fp: FuellingPoint, tr: Transaction) -> list[DataItem]:
        address = db.TransactionBuffer(fp.number, tr.seq)
        return [
            codec.item(address, 0x64),
            codec.item(address, 0x01, tr.seq),
            codec.item(address, 0x15, int(tr.state)),
            codec.item(address, 0x14, tr.controller),
            codec.item(address, 0x05, tr.amount),
            codec.item(address, 0x06, tr.volume),
        ]

    # ================================================================== reporting
    def _fire(self, fp: FuellingPoint, event: FpEvent, now: float) -> list[Message]:
        old, new = fp.fire(event)
        if new in (S.IDLE, S.CLOSED, S.INOPERATIVE):
            # A nozzle still out when a sale ends is ignored until it is hung up.
            fp.engaged = False
        if new is S.STARTED and old is not S.SUSPENDED_STARTED:
            self._start_sale(fp, now)
        return self._status(fp) if old is not new or event is FpEvent.RELEASE else []

    def _status(self, fp: FuellingPoint) -> list[Message]:
        address = db.FuellingPoint(fp.number)
        items = [
            codec.item(address, 0x64),
            codec.item(address, 0x14, int(fp.state)),
            codec.item(address, 0x15, fp.nozzle_bits),
            codec.item(address, 0x16, fp.assign_controller),
        ]
        if self.dialect.fp_alarm_in_status:
            items.append(codec.item(address, 0x50, bytes(8)))
        return self._emit(address, items)

    def _record_error(
        self, fp: FuellingPoint, error_id: int, state: FpState | None = None
    ) -> list[Message]:
        """Keep the error entry (FP_Error_State: the FP's state when it happened) and
        report it."""
        state = fp.state if state is None else state
        error = fp.errors.get(error_id)
        if error is None:
            fp.errors[error_id] = ErrorRecord(error_id, state)
        else:
            error.total += 1
            error.state = state
        address = db.ErrorEntry(fp.number, error_id)
        items = [
            codec.item(address, 0x64),
            codec.item(address, 0x01, error_id),
            codec.item(address, 0x05, int(state)),
        ]
        return self._emit(address, items)

    def _emit(self, address: db.Address, items: list[DataItem]) -> list[Message]:
        body = Unsolicited(tuple(items))
        return [Message(cd, self.lna, 0, address, body) for cd in self.recipients]

    def _fp_or_raise(self, fp: int) -> FuellingPoint:
        found = self.fps.get(fp)
        if found is None:
            raise CustomerError(f"node {self.lna} has no FP {fp}")
        return found


class _LockedByOther(Exception):
    """Lock_Transaction on a sale another CD locked: the whole message gets MS_ACK 9."""


def _is_wildcard(address: db.Address) -> bool:
    match address:
        case db.FuellingPoint(fp=0) | db.Product(pr=0) | db.Meter(meter=0):
            return True
        case db.LogicalNozzle(fp=fp, nozzle=nozzle):
            return fp == 0 or nozzle == 0
        case db.TransactionBuffer(fp=fp, every=every):
            return every or fp == 0
        case db.ProductPerMode(mode=0):
            return True
    return False


# ======================================================================================
# Customers
# ======================================================================================
@dataclass(frozen=True, slots=True)
class Lift:
    nozzle: int


@dataclass(frozen=True, slots=True)
class Fill:
    """Wait up to `wait_s` for the release, then fill to `amount`/`volume` (or until the FP
    stops the flow) at `rate_lps`."""

    amount: Decimal | None = None
    volume: Decimal | None = None
    rate_lps: Decimal | None = None
    wait_s: float = 60.0


@dataclass(frozen=True, slots=True)
class HangUp:
    pass


@dataclass(frozen=True, slots=True)
class WalkAway:
    """Let go and put the nozzle back whatever the stage of the sale."""


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


Step = Lift | Fill | HangUp | WalkAway | Pause


def normal_fill(nozzle: int, **fill: Any) -> list[Step]:
    return [Lift(nozzle), Fill(**fill), HangUp()]


class Customer:
    """A person at one FP playing `steps`, advanced by `tick(now)`.

    `outcome`: None while at it; "done", or "not_authorized" (gave up waiting for the
    release and walked away), "hung_up" (the nozzle was back before the fill).
    """

    def __init__(self, dispenser: Dispenser, fp: int, steps: Sequence[Step], now: float) -> None:
        self.dispenser = dispenser
        self.fp = fp
        self.steps = list(steps)
        self.outcome: str | None = None
        self._since = now
        self._filling = False

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def tick(self, now: float) -> list[Message]:
        out = self.dispenser.tick(now)
        while self.steps and self.outcome is None:
            step = self.steps[0]
            progressed, messages = self._do(step, now)
            out += messages
            if not progressed:
                break
            self.steps.pop(0)
            self._since = now
            self._filling = False
        if not self.steps and self.outcome is None:
            self.outcome = "done"
        return out

    def _do(self, step: Step, now: float) -> tuple[bool, list[Message]]:
        d, fp = self.dispenser, self.dispenser.fps[self.fp]
        match step:
            case Lift(nozzle=nozzle):
                return True, d.lift(self.fp, nozzle, now)
            case HangUp():
                return True, d.hang_up(self.fp, now) if fp.nozzle_out is not None else []
            case WalkAway():
                out = d.let_go(self.fp, now)
                if fp.nozzle_out is not None:
                    out += d.hang_up(self.fp, now)
                self.outcome = "walked_away"
                return True, out
            case Pause(seconds=seconds):
                return now - self._since >= seconds, []
            case Fill():
                return self._fill(step, fp, now)

    def _fill(self, step: Fill, fp: FuellingPoint, now: float) -> tuple[bool, list[Message]]:
        d = self.dispenser
        if fp.nozzle_out is None:
            self.outcome = "hung_up"
            return True, []
        if not self._filling:
            if fp.engaged and fp.state in (S.STARTED, S.FUELLING):
                self._filling = True
                return False, d.squeeze(
                    self.fp,
                    now,
                    rate_lps=step.rate_lps,
                    stop_volume=step.volume,
                    stop_amount=step.amount,
                )
            if now - self._since >= step.wait_s:
                out = d.hang_up(self.fp, now)
                self.outcome = "not_authorized"
                return True, out
            return False, []
        # Filling: done when the hand let go or the FP stopped the flow.
        if fp.flow is None or fp.state not in (S.STARTED, S.FUELLING, S.SUSPENDED_FUELLING):
            return True, d.let_go(self.fp, now)
        return False, []


class RandomCustomers:
    """Customers arriving at random at a node's FPs (exponential gaps of `mean_interval_s`),
    filling an amount, a volume or until full; they wait `wait_s` for the release. With
    `fps` they come only to those FPs (the demo keeps the others for pay-at-pump orders)."""

    def __init__(
        self,
        dispenser: Dispenser,
        now: float,
        *,
        mean_interval_s: float = 20.0,
        seed: int | None = None,
        wait_s: float = 30.0,
        rates_lps: tuple[float, float] = (0.3, 0.8),
        fps: Collection[int] | None = None,
    ) -> None:
        self.dispenser = dispenser
        self.fps = None if fps is None else frozenset(fps)
        self.rates_lps = rates_lps
        self.rng = random.Random(seed)
        self.mean_interval_s = mean_interval_s
        self.wait_s = wait_s
        self.at: dict[int, Customer] = {}
        self.served = 0
        self._next = now + self.rng.expovariate(1 / mean_interval_s)

    def tick(self, now: float) -> list[Message]:
        out: list[Message] = []
        for fp, customer in list(self.at.items()):
            out += customer.tick(now)
            if customer.done:
                del self.at[fp]
                self.served += 1
        while now >= self._next:
            self._next += self.rng.expovariate(1 / self.mean_interval_s)
            out += self._arrive(now)
        return out

    def _arrive(self, now: float) -> list[Message]:
        free = [
            fp
            for fp in self.dispenser.fps.values()
            if (self.fps is None or fp.number in self.fps)
            and fp.number not in self.at
            and fp.nozzle_out is None
            and fp.state in (S.IDLE, S.AUTHORISED)
        ]
        if not free:
            return []
        fp = self.rng.choice(free)
        nozzle = self.rng.choice(sorted(fp.nozzles))
        kind = self.rng.random()
        amount = volume = None
        if kind < 0.4:
            amount = Decimal(self.rng.choice((10, 20, 30, 50))).quantize(Decimal("0.01"))
        elif kind < 0.8:
            volume = Decimal(self.rng.randint(5, 40)).quantize(Decimal("0.01"))
        else:
            volume = Decimal(self.rng.randint(2, 60)).quantize(Decimal("0.01"))
        rate = Decimal(self.rng.uniform(*self.rates_lps)).quantize(Decimal("0.01"))
        steps: list[Step] = [
            Pause(self.rng.uniform(0.5, 2.0)),
            Lift(nozzle),
            Fill(amount, volume, rate, self.wait_s),
            Pause(self.rng.uniform(0.5, 3.0)),
            HangUp(),
        ]
        customer = Customer(self.dispenser, fp.number, steps, now)
        self.at[fp.number] = customer
        return customer.tick(now)
