"""Simulated Wayne DART pumps on a line, speaking the protocol through the codec, with customers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import random
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import structlog

from drivers.ptylink import PtyLink
from drivers.simthread import ThreadCalls
from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, DartStatus, Frame, FrameKind, Malformed

log = structlog.get_logger(__name__)

Clock: TypeAlias = Callable[[], float]
StatusListener: TypeAlias = Callable[[DartStatus], None]

_SF = b"\xfa"
_DLE_SF = b"\x10\xfa"

# Which states each CD1 state command may leave; anything else is ignored (and the pump
# reports its unchanged status so the controller sees the refusal).
_RESET_FROM = frozenset(
    {
        DartStatus.FILLING_COMPLETED,
        DartStatus.MAX_REACHED,
        DartStatus.SWITCHED_OFF,
        DartStatus.AUTHORIZED,
        DartStatus.RESET,
    }
)
_IN_FILL = frozenset({DartStatus.FILLING, DartStatus.SUSPENDED})


# ======================================================================================
# One pump
# ======================================================================================
@dataclass
class SimNozzle:
    """A nozzle with its unit price and electronic totals, all raw scaled integers."""

    number: int
    price: int
    total_volume: int = 0
    total_amount: int = 0


@dataclass
class PumpCounters:
    """What one simulated pump saw on the line; read by tests and the demo."""

    polls: int = 0
    data_frames: int = 0
    executed: int = 0
    duplicates: int = 0
    retransmissions: int = 0
    naks_sent: int = 0
    acks_mismatched: int = 0
    unknown_transactions: int = 0


class SimPump:
    """One DART pump: line-layer sequencing, the status machine and a metered flow.

    Every method takes the pump's lock, so customers may act from any thread or from
    asyncio code while the line thread answers the controller. The flow is computed from
    the clock whenever the pump is touched; nothing runs in the background.
    """

    def __init__(
        self,
        address: int,
        nozzles: Mapping[int, int],
        flow_rate_lps: float = 0.6,
        volume_decimals: int = 2,
        amount_decimals: int = 2,
        price_decimals: int = 2,
        totals: Mapping[int, tuple[int, int]] | None = None,
        *,
        identity: str | None = None,
        duplicates: str = "ack",
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0x50 <= address <= 0x6F:
            raise ValueError(f"DART pump address 0x{address:02X} is outside 0x50-0x6F")
        if not nozzles:
            raise ValueError("a pump needs at least one nozzle")
        for number, price in nozzles.items():
            if not 1 <= number <= 15:
                raise ValueError(f"nozzle number {number} is outside 1-15")
            if not 0 <= price <= 999_999:  # DC3 and CD5 carry 3 BCD bytes
                raise ValueError(f"nozzle {number}: raw price {price} does not fit 6 digits")
        for number, (volume, amount) in (totals or {}).items():
            if number not in nozzles:
                raise ValueError(f"totals given for nozzle {number}, which the pump lacks")
            if not (0 <= volume < 10**10 and 0 <= amount < 10**10):  # DC101: 5 BCD bytes
                raise ValueError(f"nozzle {number}: totals do not fit 10 digits")
        if flow_rate_lps <= 0:
            raise ValueError("flow_rate_lps must be positive")
        if identity is not None:
            codec.PumpIdentity(identity)  # ten digits, or ValueError now rather than on the line
        if duplicates not in ("ack", "silent"):
            raise ValueError(f"duplicates must be 'ack' or 'silent', not {duplicates!r}")
        # What the pump does with a data frame numbered like the last one it executed: both
        # kinds are met in the field. It never executes it again.
        self.duplicates = duplicates
        self.address = address
        self.flow_rate_lps = flow_rate_lps
        self.volume_decimals = volume_decimals
        self.amount_decimals = amount_decimals
        self.price_decimals = price_decimals
        self.identity = identity if identity is not None else f"{address:010d}"
        self.counters = PumpCounters()
        self._clock = clock
        self._lock = threading.Lock()
        start = totals or {}
        self._nozzles = {
            n: SimNozzle(n, price, *start.get(n, (0, 0))) for n, price in sorted(nozzles.items())
        }
        self._online = True
        self._ignored: frozenset[int] = frozenset()
        self._no_totals = False
        self._lift_after: tuple[int, int] | None = None
        self._listeners: list[StatusListener] = []
        self._watchers: list[Callable[[], None]] = []
        # dispenser state
        self._status = DartStatus.RESET
        self._nozzle_out: int | None = None
        self._selected = 0  # last nozzle lifted, reported in DC3 until the next one
        self._trigger = False
        self._hand_volume: int | None = None  # where the customer's hand lets go (raw)
        self._hand_amount: int | None = None
        self._allowed: frozenset[int] | None = None
        self._preset_volume: int | None = None
        self._preset_amount: int | None = None
        self._fill_nozzle: int | None = None  # nozzle fuel may flow through right now
        self._last_fill: tuple[int, int] | None = None  # (nozzle, price) of this/last fill
        self._volume = 0
        self._amount = 0
        self._litres = 0.0  # volume of the current fill at `_flow_since`, unrounded
        self._flow_since: float | None = None
        # line layer
        self._seq = 0
        self._pending: Frame | None = None
        self._queue: list[codec.ReplyData] = []
        self._last_master_seq: int | None = None

    # ---------------------------------------------------------------- customer actions
    def lift(self, nozzle: int) -> None:
        """The customer takes a nozzle out of its holster."""
        with self._lock:
            self._lift(nozzle)

    def lift_after(self, dcc: int, nozzle: int) -> None:
        """Script: a customer lifts `nozzle` the moment the pump has carried out the next
        CD1 `dcc` — between the master's command and its poll for the answer, so the
        pump's reply carries both (a second customer during the last one's sale)."""
        with self._lock:
            if nozzle not in self._nozzles:
                raise ValueError(f"pump 0x{self.address:02X} has no nozzle {nozzle}")
            self._lift_after = (dcc, nozzle)

    def _lift(self, nozzle: int) -> None:
        if nozzle not in self._nozzles:
            raise ValueError(f"pump 0x{self.address:02X} has no nozzle {nozzle}")
        if self._nozzle_out is not None:
            raise ValueError(f"nozzle {self._nozzle_out} is already out")
        self._advance()
        self._nozzle_out = nozzle
        self._selected = nozzle
        self._queue_nozzle_status()
        self._update_flow()
        self._changed()

    def squeeze(self, *, stop_volume: int | None = None, stop_amount: int | None = None) -> None:
        """The customer squeezes the trigger: fuel flows if the pump allows it.

        With `stop_volume` / `stop_amount` (raw, of this fill) the hand lets go exactly
        there, as a customer aiming at a round sum does with the trigger's last click: a
        scripted sale then ends on the figure the script asked for, which a sleep never
        would. A preset reached first still stops the fill as usual.
        """
        with self._lock:
            self._advance()
            self._trigger = True
            self._hand_volume, self._hand_amount = stop_volume, stop_amount
            self._update_flow()
            self._changed()

    def release(self) -> None:
        """The customer lets go of the trigger; the pump stays in its fill."""
        with self._lock:
            self._advance()
            self._trigger = False
            self._hand_volume = self._hand_amount = None
            self._update_flow()
            self._changed()

    def hang_up(self) -> None:
        """The nozzle goes back into its holster, which ends a fill."""
        with self._lock:
            if self._nozzle_out is None:
                return
            self._advance()
            self._trigger = False
            self._hand_volume = self._hand_amount = None
            self._nozzle_out = None
            self._queue_nozzle_status()
            if self._status in _IN_FILL:
                self._end_fill(DartStatus.FILLING_COMPLETED)
            self._update_flow()
            self._changed()

    # ---------------------------------------------------------------- queries
    @property
    def status(self) -> DartStatus:
        with self._lock:
            self._advance()
            return self._status

    @property
    def volume(self) -> int:
        """Raw volume of the current or last fill."""
        with self._lock:
            self._advance()
            return self._volume

    @property
    def amount(self) -> int:
        """Raw amount of the current or last fill."""
        with self._lock:
            self._advance()
            return self._amount

    @property
    def nozzle_out(self) -> int | None:
        with self._lock:
            return self._nozzle_out

    @property
    def squeezed(self) -> bool:
        """The customer holds the trigger (False once the hand let go at its mark)."""
        with self._lock:
            self._advance()
            return self._trigger

    @property
    def selected(self) -> int:
        """The nozzle the pump reports as selected (the last one lifted), 0: none yet."""
        with self._lock:
            return self._selected

    @property
    def nozzles(self) -> tuple[int, ...]:
        return tuple(self._nozzles)

    @property
    def online(self) -> bool:
        with self._lock:
            return self._online

    def price(self, nozzle: int) -> int:
        with self._lock:
            return self._nozzles[nozzle].price

    def totals(self, nozzle: int) -> tuple[int, int]:
        """Raw (volume, amount) electronic totals of one nozzle."""
        with self._lock:
            self._advance()
            n = self._nozzles[nozzle]
            return n.total_volume, n.total_amount

    def seconds_until(
        self, *, volume: int | None = None, amount: int | None = None
    ) -> float | None:
        """Seconds of flow until the fill reaches `volume`/`amount` (raw) or its preset,
        whichever comes first; None while no fuel flows."""
        with self._lock:
            self._advance()
            if self._flow_since is None or self._fill_nozzle is None:
                return None
            price = self._nozzles[self._fill_nozzle].price
            targets = [t for t in (volume, self._preset_volume) if t is not None]
            targets += [t for t in (self._hand_volume,) if t is not None]
            targets += [
                self._volume_for_amount(t, price)
                for t in (amount, self._preset_amount, self._hand_amount)
                if t is not None and price > 0
            ]
            if not targets:
                return None
            litres = min(targets) / float(10**self.volume_decimals)
            return max(0.0, (litres - self._litres) / self.flow_rate_lps)

    # ---------------------------------------------------------------- hooks
    def set_flow_rate(self, litres_per_second: float) -> None:
        """How fast fuel flows from now on; what flowed so far is metered at the old rate."""
        if not (litres_per_second > 0 and math.isfinite(litres_per_second)):
            raise ValueError("the flow rate must be positive")
        with self._lock:
            self._advance()
            self.flow_rate_lps = litres_per_second

    def set_online(self, online: bool) -> None:
        """An offline pump hears nothing and answers nothing (power or line cut)."""
        with self._lock:
            self._online = online
            self._changed()

    def power_cycle(self) -> None:
        """Mains off and on: the line layer forgets its sequence numbers and queued data;
        the fill, the nozzles and their totals survive (they are kept in the pump's memory)."""
        with self._lock:
            self._seq = 0
            self._pending = None
            self._queue.clear()
            self._last_master_seq = None

    def reset_at_the_pump(self) -> None:
        """Fault: the fill is ended and the pump reset from its own keypad (or by a second
        controller) while the station did not hear it: the station's next poll finds RESET
        without having seen FILLING COMPLETED. The fill stays readable (RETURN FILLING
        INFORMATION) until the next authorization, as a pump keeps its last transaction."""
        with self._lock:
            self._queue.clear()  # what the pump had to say meanwhile was never heard
            self._set_status(DartStatus.RESET)
            self._queue_status()

    def remember_master_seq(self, seq: int | None) -> None:
        """As if the last data frame the pump executed had carried TX# `seq` (None: none
        since it powered up): what an earlier master, or an earlier run of ours, left."""
        with self._lock:
            self._last_master_seq = seq

    def give_no_totals(self, none: bool = True) -> None:
        """Fault: answer no totals request (a pump without DC101 electronic totals: the
        request is acknowledged, no counters come back)."""
        with self._lock:
            self._no_totals = none

    def ignore_commands(self, *dccs: int) -> None:
        """Fault: ACK these CD1 commands but carry none of them out (none: back to normal)."""
        with self._lock:
            self._ignored = frozenset(dccs)

    def add_watcher(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call `watcher()` on any change a customer or the controller makes: status,
        nozzle, trigger, online. Returns the function removing it. Like listeners, it runs
        under the pump's lock and must be quick and not call back into the pump."""
        with self._lock:
            self._watchers.append(watcher)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._watchers.remove(watcher)

        return remove

    def _changed(self) -> None:
        # Caller holds self._lock.
        for watcher in list(self._watchers):
            watcher()

    def add_listener(self, listener: StatusListener) -> Callable[[], None]:
        """Call `listener(status)` on every status change; returns the function removing it.

        Listeners run under the pump's lock on whatever thread changed the status: they
        must be quick and must not call back into the pump.
        """
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # ---------------------------------------------------------------- the line
    def handle(self, item: Frame | Malformed) -> Frame | None:
        """Answer one frame heard on the line; None means the pump stays silent."""
        with self._lock:
            if not self._online:
                return None
            if isinstance(item, Malformed):
                if item.kind == "bad_crc" and item.address == self.address:
                    self.counters.naks_sent += 1
                    return codec.nak(self.address, item.seq or 0)
                return None
            if item.address != self.address:
                return None
            self._advance()
            kind = item.kind
            if kind is FrameKind.POLL:
                return self._answer_poll()
            if kind is FrameKind.ACKPOLL:
                self._acknowledged(item.seq)
                return self._answer_poll()
            if kind is FrameKind.ACK:
                self._acknowledged(item.seq)
                return None
            if kind is FrameKind.DATA:
                return self._receive_data(item)
            return None  # NAK / EOT from the master: nothing to do, pending data stays

    def _answer_poll(self) -> Frame:
        self.counters.polls += 1
        if self._pending is not None:
            self.counters.retransmissions += 1
            return self._pending
        if self._status is DartStatus.FILLING:
            self._queue_filling()
        if not self._queue:
            return codec.eot(self.address, self._seq)
        self._seq = (self._seq + 1) % 16
        items = [item.to_transaction() for item in self._queue]
        self._queue.clear()
        self._pending = codec.data(self.address, self._seq, *items)
        return self._pending

    def _acknowledged(self, seq: int) -> None:
        if self._pending is not None and self._pending.seq == seq:
            self._pending = None
        elif self._pending is not None:
            self.counters.acks_mismatched += 1

    def _receive_data(self, frame: Frame) -> Frame | None:
        self.counters.data_frames += 1
        if frame.seq == self._last_master_seq:
            # Our ACK was lost and the master sent the frame again: confirm, don't redo.
            # (A pump of the "silent" kind drops it without a word.)
            self.counters.duplicates += 1
            return codec.ack(self.address, frame.seq) if self.duplicates == "ack" else None
        self._last_master_seq = frame.seq
        for tx in frame.transactions:
            self._execute(codec.parse_command(tx))
        self.counters.executed += 1
        return codec.ack(self.address, frame.seq)

    # ---------------------------------------------------------------- commands
    def _execute(self, command: object) -> None:
        if isinstance(command, codec.Command):
            self._execute_dcc(int(command.dcc))
        elif isinstance(command, codec.AllowedNozzles):
            if self._status not in _IN_FILL:
                self._allowed = frozenset(command.nozzles)
        elif isinstance(command, codec.PresetVolume):
            if self._status not in _IN_FILL:
                self._preset_volume = command.value
        elif isinstance(command, codec.PresetAmount):
            if self._status not in _IN_FILL:
                self._preset_amount = command.value
        elif isinstance(command, codec.PriceUpdate):
            if self._status not in _IN_FILL:
                for nozzle, price in zip(self._nozzles.values(), command.prices, strict=False):
                    nozzle.price = price
        elif isinstance(command, codec.RequestTotals):
            counted = self._nozzles.get(command.counter)
            if counted is not None and not self._no_totals:
                self._queue.append(
                    codec.TotalCounters(
                        command.counter, counted.total_volume, counted.total_amount, 0
                    )
                )
        else:
            self.counters.unknown_transactions += 1

    def _execute_dcc(self, dcc: int) -> None:
        self._carry_out(dcc)
        if self._lift_after is not None and self._lift_after[0] == dcc:
            nozzle = self._lift_after[1]
            self._lift_after = None
            if self._nozzle_out is None:
                self._lift(nozzle)

    def _carry_out(self, dcc: int) -> None:
        status = self._status
        if dcc in self._ignored:
            # A pump with a jammed state machine: it acknowledges and does nothing.
            self._queue_status()
            return
        if dcc == DCC.RETURN_STATUS:
            self._queue_status()
        elif dcc == DCC.RETURN_FILLING_INFORMATION:
            self._queue_filling()
            self._queue_fill_nozzle()
        elif dcc == DCC.RETURN_PUMP_PARAMETERS:
            self._queue.append(self._parameters())
        elif dcc == DCC.RETURN_PUMP_IDENTITY:
            self._queue.append(codec.PumpIdentity(self.identity))
        elif dcc == DCC.RETURN_PRICES:
            self._queue_prices()
        elif dcc == DCC.RESET:
            if status in _RESET_FROM:
                if status is DartStatus.AUTHORIZED:
                    self._clear_authorization()
                self._set_status(DartStatus.RESET)
            self._queue_status()
        elif dcc == DCC.AUTHORIZE:
            if status is DartStatus.RESET:
                self._volume = self._amount = 0
                self._litres = 0.0
                self._last_fill = None
                self._selected = self._nozzle_out or 0
                self._set_status(DartStatus.AUTHORIZED)
                self._update_flow()
            self._queue_status()
        elif dcc == DCC.STOP:
            if status in _IN_FILL:
                self._end_fill(DartStatus.FILLING_COMPLETED)
            elif status is DartStatus.AUTHORIZED:
                self._clear_authorization()
                self._set_status(DartStatus.RESET)
            self._queue_status()
        elif dcc == DCC.SWITCH_OFF:
            if status not in _IN_FILL:
                self._clear_authorization()
                self._set_status(DartStatus.SWITCHED_OFF)
            self._queue_status()
        elif dcc == DCC.SUSPEND:
            if status is DartStatus.FILLING:
                self._set_status(DartStatus.SUSPENDED)
                self._update_flow()
            self._queue_status()
        elif dcc == DCC.RESUME:
            if status is DartStatus.SUSPENDED:
                self._set_status(DartStatus.FILLING)
                self._update_flow()
            self._queue_status()
        else:
            self.counters.unknown_transactions += 1

    # ---------------------------------------------------------------- flow
    def _advance(self) -> None:
        """Bring the metered volume up to now; stop exactly at a preset, or let go of the
        trigger exactly where the customer's hand was told to."""
        since = self._flow_since
        if since is None or self._fill_nozzle is None:
            return
        now = self._clock()
        if now <= since:
            return
        price = self._nozzles[self._fill_nozzle].price
        litres = self._litres + self.flow_rate_lps * (now - since)
        self._litres = litres
        self._flow_since = now
        volume = max(self._volume, math.floor(litres * 10**self.volume_decimals + 1e-9))
        limit = self._stop_at(price, self._preset_volume, self._preset_amount)
        hand = self._stop_at(price, self._hand_volume, self._hand_amount)
        # The hand lets go first unless the preset stops the flow at or before it.
        if (
            hand is not None
            and self._reached(hand, self._hand_amount, volume, price)
            and (limit is None or limit[0] > hand[0])
        ):
            self._meter(max(self._volume, hand[0]), max(self._amount, hand[1]))
            self._litres = self._volume / 10**self.volume_decimals
            self._trigger = False
            self._hand_volume = self._hand_amount = None
            self._flow_since = None
            self._changed()
            return
        if limit is not None:
            limit_volume, limit_amount = limit
            if self._reached(limit, self._preset_amount, volume, price):
                self._meter(max(self._volume, limit_volume), max(self._amount, limit_amount))
                self._litres = self._volume / 10**self.volume_decimals
                self._end_fill(DartStatus.MAX_REACHED)
                return
        self._meter(volume, self._amount_for(volume, price))

    def _stop_at(
        self, price: int, volume: int | None, amount: int | None
    ) -> tuple[int, int] | None:
        """(volume, amount) at which a volume or amount mark (a preset, or where the hand
        lets go) stops the flow, or None without either."""
        limits: list[tuple[int, int]] = []
        if volume is not None:
            limits.append((volume, self._amount_for(volume, price)))
        if amount is not None and price > 0:
            limits.append((self._volume_for_amount(amount, price), amount))
        return min(limits) if limits else None

    def _reached(
        self, limit: tuple[int, int], amount_mark: int | None, volume: int, price: int
    ) -> bool:
        # An amount mark may be met a volume step before its rounded volume.
        return volume >= limit[0] or (
            amount_mark is not None and self._amount_for(volume, price) >= amount_mark
        )

    def _meter(self, volume: int, amount: int) -> None:
        """Set the fill's volume and amount; the nozzle's totals grow by the same steps."""
        assert self._fill_nozzle is not None
        nozzle = self._nozzles[self._fill_nozzle]
        nozzle.total_volume += volume - self._volume
        nozzle.total_amount += amount - self._amount
        self._volume, self._amount = volume, amount

    def _update_flow(self) -> None:
        """Start or stop the flow after anything that may change it."""
        if (
            self._status is DartStatus.AUTHORIZED
            and self._trigger
            and self._nozzle_out is not None
            and (self._allowed is None or self._nozzle_out in self._allowed)
        ):
            self._fill_nozzle = self._nozzle_out
            self._last_fill = (self._nozzle_out, self._nozzles[self._nozzle_out].price)
            self._set_status(DartStatus.FILLING)
        flowing = (
            self._status is DartStatus.FILLING
            and self._trigger
            and self._nozzle_out is not None
            and self._nozzle_out == self._fill_nozzle
        )
        if flowing and self._flow_since is None:
            self._flow_since = self._clock()
        elif not flowing:
            self._flow_since = None

    def _end_fill(self, status: DartStatus) -> None:
        self._flow_since = None
        self._fill_nozzle = None
        self._clear_authorization()
        self._queue_filling()
        self._set_status(status)

    def _clear_authorization(self) -> None:
        self._allowed = None
        self._preset_volume = None
        self._preset_amount = None

    def _amount_for(self, volume: int, price: int) -> int:
        shift = self.volume_decimals + self.price_decimals - self.amount_decimals
        return _round_div(volume * price * 10 ** max(0, -shift), 10 ** max(0, shift))

    def _volume_for_amount(self, amount: int, price: int) -> int:
        shift = self.volume_decimals + self.price_decimals - self.amount_decimals
        return _round_div(amount * 10 ** max(0, shift), price * 10 ** max(0, -shift))

    # ---------------------------------------------------------------- reports
    def _set_status(self, status: DartStatus) -> None:
        if status is self._status:
            return
        self._status = status
        self._queue_status()
        for listener in list(self._listeners):
            listener(status)
        self._changed()

    def _queue_status(self) -> None:
        # Every change is reported, in order, so the controller sees AUTHORIZED before
        # FILLING even when both happen between two polls; a command that changes
        # nothing repeats the status unless it is already the latest one waiting.
        waiting = [q for q in self._queue if isinstance(q, codec.PumpStatus)]
        if not waiting or waiting[-1].status != self._status:
            self._queue.append(codec.PumpStatus(int(self._status)))

    def _queue_filling(self) -> None:
        self._replace(
            codec.FilledVolumeAmount, codec.FilledVolumeAmount(self._volume, self._amount)
        )

    def _queue_nozzle_status(self) -> None:
        price = self._nozzles[self._selected].price if self._selected else 0
        self._queue.append(codec.NozzleStatus(price, self._selected, self._nozzle_out is not None))

    def _queue_fill_nozzle(self) -> None:
        # Filling information pairs DC2 with the nozzle and price of that fill: the next
        # customer lifting another nozzle must not move the last sale onto it.
        if self._last_fill is None:
            self._queue_nozzle_status()
            return
        nozzle, price = self._last_fill
        self._queue.append(codec.NozzleStatus(price, nozzle, self._nozzle_out == nozzle))

    def _queue_prices(self) -> None:
        # DC103 is "per grade"; each simulated nozzle is its own grade, in nozzle order.
        self._queue.append(codec.Prices(tuple(n.price for n in self._nozzles.values())))

    def _parameters(self) -> codec.PumpParameters:
        return codec.PumpParameters(
            volume_decimals=self.volume_decimals,
            amount_decimals=self.amount_decimals,
            price_decimals=self.price_decimals,
        )

    def _replace(self, kind: type, item: codec.ReplyData) -> None:
        self._queue = [q for q in self._queue if not isinstance(q, kind)]
        self._queue.append(item)

    def __repr__(self) -> str:
        return f"SimPump(0x{self.address:02X}, {self._status.name})"


def _round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)


# ======================================================================================
# The line
# ======================================================================================
@dataclass(slots=True)
class SimLineStats:
    """Counters of a simulated line."""

    frames_received: int = 0
    replies_sent: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0
    replies_dropped: int = 0
    replies_corrupted: int = 0
    bytes_lost: int = 0


@dataclass
class _Faults:
    drop: dict[int, int] = field(default_factory=dict)
    drop_data: dict[int, int] = field(default_factory=dict)
    corrupt: set[int] = field(default_factory=set)
    corrupt_n: dict[int, int] = field(default_factory=dict)
    nak_data: dict[int, int] = field(default_factory=dict)
    garbage: bytearray = field(default_factory=bytearray)


class DartLineSimulator:
    """Pumps sharing one half-duplex line, served from a background thread.

    The thread blocks in poll()/read() and times replies with time.sleep against absolute
    perf_counter deadlines, which keeps sub-millisecond accuracy that asyncio timers lack.
    With `baud` set a reply lands no earlier than it would on a real line: the request's
    own transmission, the pump's think time, then the reply's transmission.
    """

    def __init__(
        self,
        pumps: Sequence[SimPump],
        *,
        baud: int | None = None,
        data_bits: int = 8,
        parity: str = "odd",
        stop_bits: int = 1,
        reply_delay_s: float = 0.0,
        name: str = "dart-sim",
    ) -> None:
        addresses = [p.address for p in pumps]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two simulated pumps share an address")
        if parity not in ("none", "odd", "even"):
            raise ValueError(f"parity must be none, odd or even, not {parity!r}")
        if baud is not None and baud <= 0:
            raise ValueError("baud must be positive")
        self.name = name
        self._pumps = {p.address: p for p in pumps}
        self.baud = baud
        self.bits_per_char = 1 + data_bits + (0 if parity == "none" else 1) + stop_bits
        self.reply_delay_s = reply_delay_s
        self._faults = _Faults()
        self._lock = threading.Lock()  # guards faults and counters
        self._stats = SimLineStats()
        self._link: PtyLink | None = None
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._calls = ThreadCalls(name)
        self._rx = bytearray()
        self._line_free_at = 0.0

    # ---------------------------------------------------------------- pumps
    @property
    def pumps(self) -> tuple[SimPump, ...]:
        return tuple(self._pumps.values())

    def pump(self, address: int) -> SimPump:
        return self._pumps[address]

    @property
    def link(self) -> PtyLink | None:
        return self._link

    @property
    def stats(self) -> SimLineStats:
        """A snapshot of the line's counters."""
        with self._lock:
            return replace(self._stats)

    # ---------------------------------------------------------------- serving
    def serve_pty(self, link: Path | None = None) -> PtyLink:
        """Open a pty pair (symlinked at `link`) and answer on its master end."""
        pty = PtyLink(link).open()
        self._link = pty
        try:
            self.serve_fd(pty.master_fd)
        except BaseException:
            pty.close()
            self._link = None
            raise
        return pty

    def serve_fd(self, fd: int) -> None:
        """Answer on an already open descriptor (made non-blocking; the caller owns it)."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already serving a line")
        os.set_blocking(fd, False)
        self._fd = fd
        self._stopping = False
        self._calls.open()
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-line", daemon=True)
        self._calls.thread = self._thread
        self._thread.start()
        log.info("dart_sim_serving", line=self.name, pumps=[f"0x{a:02X}" for a in self._pumps])

    def stop(self) -> None:
        """Stop the line thread, wait for it, close the pty if this simulator made it."""
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._calls.wake()
            thread.join()
            self._thread = self._calls.thread = None
            self._calls.close()
        if self._link is not None:
            self._link.close()
            self._link = None
        self._fd = None

    def unplug(self) -> None:
        """Pull the line's adapter out (see PtyLink.unplug); pumps keep their state."""
        self._calls.call(self._do_unplug)

    def replug(self) -> None:
        """Plug a fresh adapter in at the same path."""
        self._calls.call(self._do_replug)

    def __enter__(self) -> DartLineSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- fault injection
    def drop_next_replies(self, address: int, n: int = 1) -> None:
        """The pump acts on the next `n` frames but its answers are lost on the line."""
        with self._lock:
            self._faults.drop[address] = self._faults.drop.get(address, 0) + n

    def drop_command_replies(self, address: int, n: int = 1) -> None:
        """The pump acts on the next `n` data frames (commands, and their retransmissions)
        but its acknowledgements are lost; replies to polls get through. Unlike
        `drop_next_replies` this does not depend on how many polls race the command."""
        with self._lock:
            self._faults.drop_data[address] = self._faults.drop_data.get(address, 0) + n

    def faults_pending(self, address: int) -> int:
        """How many of the faults asked for at this pump have not struck yet (answers still to
        drop, corrupt or refuse): a harness that adds more before they struck would pile them
        up on a pump polled rarely, an outage rather than line noise."""
        with self._lock:
            f = self._faults
            return (
                f.drop.get(address, 0)
                + f.drop_data.get(address, 0)
                + (address in f.corrupt)
                + f.corrupt_n.get(address, 0)
                + f.nak_data.get(address, 0)
            )

    def withdraw_faults(self) -> int:
        """Every fault asked for that has not struck yet is withdrawn (the noise is over);
        returns how many there were."""
        with self._lock:
            f = self._faults
            pending = (
                sum(f.drop.values())
                + sum(f.drop_data.values())
                + len(f.corrupt)
                + sum(f.corrupt_n.values())
                + sum(f.nak_data.values())
                + bool(f.garbage)
            )
            self._faults = _Faults()
            return pending

    def corrupt_next_reply(self, address: int) -> None:
        """Flip a CRC byte of the pump's next data reply (only data frames carry a CRC)."""
        with self._lock:
            self._faults.corrupt.add(address)

    def corrupt_replies(self, address: int, n: int) -> None:
        """Flip a CRC byte of the pump's next `n` data replies, 0: no more (a noisy line: its
        data is retransmitted on every poll until acknowledged, so each poll sees a bad CRC)."""
        with self._lock:
            self._faults.corrupt_n[address] = n

    def nak_data_frames(self, address: int, n: int) -> None:
        """The pump refuses the next `n` data frames (commands) with a NAK, unexecuted."""
        with self._lock:
            self._faults.nak_data[address] = self._faults.nak_data.get(address, 0) + n

    def refusing(self, address: int) -> int:
        """How many more data frames the pump will refuse with a NAK."""
        with self._lock:
            return self._faults.nak_data.get(address, 0)

    def stop_refusing(self, address: int) -> None:
        """The pump takes commands again (undoes `nak_data_frames`)."""
        with self._lock:
            self._faults.nak_data.pop(address, None)

    def inject_garbage(self, data: bytes) -> None:
        """Line noise: `data` goes out on the line just before the next reply."""
        with self._lock:
            self._faults.garbage += data

    def set_online(self, address: int, online: bool) -> None:
        self._pumps[address].set_online(online)

    # ---------------------------------------------------------------- the thread
    def _serve(self) -> None:
        try:
            self._serve_forever()
        except Exception:
            log.exception("dart_sim_line_failed", line=self.name)
            raise
        finally:
            self._calls.run_pending()

    def _serve_forever(self) -> None:
        poller = select.poll()
        poller.register(self._calls.wake_fd, select.POLLIN)
        watched: int | None = None
        while not self._stopping:
            if watched != self._fd:
                if watched is not None:
                    with contextlib.suppress(KeyError):
                        poller.unregister(watched)
                if self._fd is not None:
                    poller.register(self._fd, select.POLLIN)
                watched = self._fd
            for fd, events in poller.poll():
                if fd == self._calls.wake_fd:
                    self._calls.drain()
                    self._calls.run_pending()
                elif fd == self._fd:
                    self._on_readable(fd, events)

    def _on_readable(self, fd: int, events: int) -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            chunk = b""
        if not chunk:
            # Only a foreign descriptor can hang up: a PtyLink keeps its slave open.
            log.warning("dart_sim_line_closed", line=self.name, events=events)
            self._fd = None
            return
        received_at = time.perf_counter()
        self._rx += chunk
        while self._rx:
            consumed, item = codec.decode(bytes(self._rx))
            if consumed == 0:
                break
            del self._rx[:consumed]
            if item is not None:
                self._on_frame(item, consumed, received_at)

    def _on_frame(self, item: Frame | Malformed, size: int, received_at: float) -> None:
        with self._lock:
            if isinstance(item, Malformed):
                if item.kind == "garbage":
                    self._count(garbage_bytes=len(item.raw))
                else:
                    self._count(bad_frames=1)
            else:
                self._count(frames_received=1)
        pump = self._pumps.get(item.address) if item.address is not None else None
        if pump is None:
            return
        if isinstance(item, Frame) and item.kind is FrameKind.DATA and pump.online:
            with self._lock:
                refused = self._faults.nak_data.get(pump.address, 0)
                if refused:
                    self._faults.nak_data[pump.address] = refused - 1
            if refused:
                self._send_at(codec.encode(codec.nak(pump.address, item.seq)), size, received_at)
                return
        reply = pump.handle(item)
        if reply is None:
            return
        with self._lock:
            wire = self._apply_faults(pump.address, reply, item.kind is FrameKind.DATA)
        if wire is None:
            return
        self._send_at(wire, size, received_at)

    def _apply_faults(self, address: int, reply: Frame, to_data: bool) -> bytes | None:
        faults = self._faults
        for drops, applies in ((faults.drop, True), (faults.drop_data, to_data)):
            dropped = drops.get(address, 0)
            if dropped and applies:
                drops[address] = dropped - 1
                self._count(replies_dropped=1)
                return None
        wire = codec.encode(reply)
        if address in faults.corrupt and reply.kind is FrameKind.DATA:
            faults.corrupt.discard(address)
            wire = _flip_crc(wire)
            self._count(replies_corrupted=1)
        elif faults.corrupt_n.get(address) and reply.kind is FrameKind.DATA:
            faults.corrupt_n[address] -= 1
            wire = _flip_crc(wire)
            self._count(replies_corrupted=1)
        if faults.garbage:
            wire = bytes(faults.garbage) + wire
            faults.garbage.clear()
        return wire

    def _send_at(self, wire: bytes, request_size: int, received_at: float) -> None:
        # Half duplex: a request that queued up behind our last reply starts after it.
        start = max(received_at, self._line_free_at)
        deadline = start + self.reply_delay_s
        if self.baud is not None:
            deadline += (request_size + len(wire)) * self.bits_per_char / self.baud
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self._line_free_at = max(deadline, time.perf_counter())
        self._write(wire)

    def _write(self, wire: bytes) -> None:
        fd = self._fd
        if fd is None:
            with self._lock:
                self._count(bytes_lost=len(wire))
            return
        view = memoryview(wire)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BlockingIOError:
            pass  # nobody reads the line and its buffer is full: the bytes are lost
        except OSError as exc:
            log.warning("dart_sim_write_failed", line=self.name, error=exc.strerror)
        with self._lock:
            self._count(replies_sent=1 if not view else 0, bytes_lost=len(view))

    def _count(self, **deltas: int) -> None:
        # Caller holds self._lock.
        for name, delta in deltas.items():
            setattr(self._stats, name, getattr(self._stats, name) + delta)

    def _do_unplug(self) -> None:
        if self._link is None:
            raise RuntimeError("only a line served with serve_pty() can be unplugged")
        self._link.unplug()
        self._fd = None
        self._rx.clear()
        log.info("dart_sim_unplugged", line=self.name)

    def _do_replug(self) -> None:
        if self._link is None:
            raise RuntimeError("only a line served with serve_pty() can be replugged")
        self._link.replug()
        os.set_blocking(self._link.master_fd, False)
        self._fd = self._link.master_fd
        self._rx.clear()
        log.info("dart_sim_replugged", line=self.name, pty=self._link.slave_name)


def _flip_crc(wire: bytes) -> bytes:
    """The same data frame with its CRC's low byte changed (escaping kept valid)."""
    body = wire[:-2].replace(_DLE_SF, _SF)  # ADR … data CRC_L CRC_H, unescaped
    corrupted = body[:-2] + bytes([body[-2] ^ 0x01]) + body[-1:]
    return corrupted.replace(_SF, _DLE_SF) + wire[-2:]


# ======================================================================================
# Customers
# ======================================================================================
@dataclass(frozen=True, slots=True)
class Lift:
    nozzle: int


@dataclass(frozen=True, slots=True)
class WaitAuthorized:
    """Wait with the nozzle out until the pump is released; give up (hang up) after timeout."""

    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Squeeze:
    pass


@dataclass(frozen=True, slots=True)
class FillFor:
    seconds: float


@dataclass(frozen=True, slots=True)
class FillUntil:
    """Keep the trigger squeezed until this much fuel or money went through, or until the
    pump stops the flow itself; with neither given, only the pump (a preset) stops it."""

    volume: Decimal | None = None
    amount: Decimal | None = None
    timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class Release:
    pass


@dataclass(frozen=True, slots=True)
class HangUp:
    pass


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


Step: TypeAlias = Lift | WaitAuthorized | Squeeze | FillFor | FillUntil | Release | HangUp | Wait


@dataclass(frozen=True, slots=True)
class Visit:
    """What one customer did at a pump."""

    pump: int
    script: str
    authorized: bool
    status: DartStatus
    volume: int
    amount: int


class Customer:
    """A person at a pump playing a list of steps with asyncio.sleep between actions."""

    def __init__(self, pump: SimPump, steps: Iterable[Step], *, name: str = "customer") -> None:
        self.pump = pump
        self.steps = tuple(steps)
        self.name = name

    async def run(self) -> Visit:
        pump = self.pump
        authorized = False
        try:
            for step in self.steps:
                if isinstance(step, Lift):
                    pump.lift(step.nozzle)
                elif isinstance(step, WaitAuthorized):
                    authorized = await wait_until(pump, _released(pump), step.timeout)
                    if not authorized:
                        break  # nobody released the pump: walk away
                elif isinstance(step, Squeeze):
                    pump.squeeze()
                elif isinstance(step, FillFor):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, FillUntil):
                    await self._fill_until(step)
                elif isinstance(step, Release):
                    pump.release()
                elif isinstance(step, HangUp):
                    pump.hang_up()
                elif isinstance(step, Wait):
                    await asyncio.sleep(step.seconds)
        finally:
            # Whatever happened (cancelled, gave up), nobody leaves a nozzle out.
            pump.release()
            pump.hang_up()
        return Visit(pump.address, self.name, authorized, pump.status, pump.volume, pump.amount)

    async def _fill_until(self, step: FillUntil) -> None:
        pump = self.pump
        volume = _raw(step.volume, pump.volume_decimals) if step.volume is not None else None
        amount = _raw(step.amount, pump.amount_decimals) if step.amount is not None else None

        def done() -> bool:
            if pump.status is not DartStatus.FILLING:
                return True
            return (volume is not None and pump.volume >= volume) or (
                amount is not None and pump.amount >= amount
            )

        await wait_until(
            pump, done, step.timeout, wake=lambda: pump.seconds_until(volume=volume, amount=amount)
        )


def _raw(value: Decimal, decimals: int) -> int:
    return int((value * 10**decimals).to_integral_value())


def _released(pump: SimPump) -> Callable[[], bool]:
    return lambda: pump.status in (DartStatus.AUTHORIZED, DartStatus.FILLING)


async def wait_until(
    pump: SimPump,
    predicate: Callable[[], bool],
    within_s: float,
    *,
    wake: Callable[[], float | None] = lambda: None,
) -> bool:
    """Wait until `predicate()` holds: woken by any change at the pump (see add_watcher)
    and by the moment `wake()` says the flow reaches its mark. False after `within_s`."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def on_change() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(changed.set)

    remove = pump.add_watcher(on_change)
    try:
        deadline = loop.time() + within_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            due = wake()
            # A hair past the computed moment, so the metered volume has really got there.
            wait = remaining if due is None else min(remaining, due + 0.002)
            changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await changed.wait()
        return True
    finally:
        remove()


# Ready-made scripts ---------------------------------------------------------------------
# `react_s` is the customer's reaction time between the pump's release and the squeeze:
# people are not instant, and a controller should see AUTHORIZED before FILLING.
def normal_fill(
    nozzle: int, amount: Decimal, *, wait_s: float = 60.0, react_s: float = 1.0
) -> list[Step]:
    """Lift, wait for the release, fill to about `amount`, hang up."""
    return [
        Lift(nozzle),
        WaitAuthorized(wait_s),
        Wait(react_s),
        Squeeze(),
        FillUntil(amount=amount),
        Release(),
        HangUp(),
    ]


def preset_fill(
    nozzle: int, *, wait_s: float = 60.0, react_s: float = 1.0, timeout_s: float = 120.0
) -> list[Step]:
    """Keep squeezing until the pump's preset stops the flow (or `timeout_s` passes)."""
    return [
        Lift(nozzle),
        WaitAuthorized(wait_s),
        Wait(react_s),
        Squeeze(),
        FillUntil(timeout=timeout_s),
        Release(),
        HangUp(),
    ]


def walk_away(nozzle: int, *, wait_s: float = 60.0, linger_s: float = 3.0) -> list[Step]:
    """Lift, get released, then leave without taking fuel."""
    return [Lift(nozzle), WaitAuthorized(wait_s), Wait(linger_s), HangUp()]


def wrong_nozzle(
    nozzle: int, *, wait_s: float = 60.0, react_s: float = 1.0, linger_s: float = 3.0
) -> list[Step]:
    """Lift a nozzle the authorization does not allow and squeeze in vain."""
    return [
        Lift(nozzle),
        WaitAuthorized(wait_s),
        Wait(react_s),
        Squeeze(),
        Wait(linger_s),
        Release(),
        HangUp(),
    ]


def hang_up_mid_fill(
    nozzle: int, seconds: float, *, wait_s: float = 60.0, react_s: float = 1.0
) -> list[Step]:
    """Fill for a while and put the nozzle back with the trigger still squeezed."""
    return [
        Lift(nozzle),
        WaitAuthorized(wait_s),
        Wait(react_s),
        Squeeze(),
        FillFor(seconds),
        HangUp(),
    ]


class RandomCustomers:
    """Plausible customers arriving at random (exponential gaps) at free pumps, forever.

    A pump is free when nobody stands at it and `turnaround_s` has passed since the last
    customer drove off, which also leaves the controller time to settle the sale.
    """

    def __init__(
        self,
        sim: DartLineSimulator,
        pumps: Sequence[SimPump] | None = None,
        mean_interval_s: float = 20.0,
        seed: int | None = None,
        *,
        turnaround_s: float = 10.0,
        on_visit: Callable[[Visit], None] | None = None,
    ) -> None:
        if mean_interval_s <= 0:
            raise ValueError("mean_interval_s must be positive")
        self.sim = sim
        self.pumps = tuple(pumps) if pumps is not None else sim.pumps
        self.mean_interval_s = mean_interval_s
        self.turnaround_s = turnaround_s
        self.on_visit = on_visit
        self.visits = 0
        self._rng = random.Random(seed)
        self._busy: set[int] = set()
        self._free_at: dict[int, float] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            while True:
                await asyncio.sleep(self._rng.expovariate(1.0 / self.mean_interval_s))
                now = loop.time()
                free = [
                    p
                    for p in self.pumps
                    if p.address not in self._busy
                    and p.nozzle_out is None
                    and self._free_at.get(p.address, now) <= now
                ]
                if not free:
                    continue  # every pump is taken: this customer drives on
                pump = self._rng.choice(free)
                name, steps = self._pick(pump)
                self._busy.add(pump.address)
                group.create_task(
                    self._visit(Customer(pump, steps, name=name)),
                    name=f"customer-{self.sim.name}-0x{pump.address:02X}",
                )

    def _pick(self, pump: SimPump) -> tuple[str, list[Step]]:
        rng = self._rng
        nozzle = rng.choice(pump.nozzles)
        react = rng.uniform(0.5, 2.0)
        roll = rng.random()
        if roll < 0.60:
            money = Decimal(rng.randrange(20, 300, 10))
            return "normal_fill", normal_fill(nozzle, money, react_s=react)
        if roll < 0.80:
            return "preset_fill", preset_fill(nozzle, react_s=react)
        if roll < 0.88:
            return "walk_away", walk_away(nozzle, linger_s=rng.uniform(1.0, 5.0))
        if roll < 0.94 and len(pump.nozzles) > 1:
            linger = rng.uniform(2.0, 6.0)
            return "wrong_nozzle", wrong_nozzle(nozzle, react_s=react, linger_s=linger)
        seconds = rng.uniform(2.0, 15.0)
        return "hang_up_mid_fill", hang_up_mid_fill(nozzle, seconds, react_s=react)

    async def _visit(self, customer: Customer) -> None:
        address = customer.pump.address
        try:
            visit = await customer.run()
        finally:
            self._busy.discard(address)
            self._free_at[address] = asyncio.get_running_loop().time() + self.turnaround_s
        self.visits += 1
        log.info(
            "dart_sim_customer_left",
            line=self.sim.name,
            pump=f"0x{visit.pump:02X}",
            script=visit.script,
            authorized=visit.authorized,
            status=visit.status.name,
            volume=visit.volume,
            amount=visit.amount,
        )
        if self.on_visit is not None:
            self.on_visit(visit)
