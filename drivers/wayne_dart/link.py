"""The DART data link as sans-I/O state: bytes in, frames out; sequence numbers, ACK/NAK,
retries, duplicates and the TX# resync as plain code, with no clock and no awaits.

An exchange with a pump (a routine poll, a command, a resync) is a generator of `Output`s:
`Transact(frame)` asks the driver to send a frame and send back the pump's reply (a `Frame`
from that pump, or None when none came in time); `Ack` is a frame to send without waiting;
`Report` carries the items of a data frame new to us; a `Liveness` says how the pump did.
The generator's return value is the exchange's result; it raises DeviceTimeout when the
pump never did what was asked. The driver (drivers/wayne_dart/driver.py) carries the outputs
out on the bus engine; tests drive the generators by hand (tests/drivers/wayne_dart/test_link.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeAlias

from drivers.base import DeviceTimeout, LineCounters
from drivers.bus import DecodingReader
from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, Frame, FrameKind, Malformed

# Fresh TX# tried to pin a pump's numbers before giving up (each with the line's retries).
RESYNC_ROUNDS = 3


class Liveness(enum.Enum):
    ANSWERED = "answered"  # a valid frame came back from the pump
    MISSED = "missed"  # nothing (valid) came back in time
    REFUSED = "refused"  # the pump answered NAK: a refusal, not an answer


@dataclass(frozen=True, slots=True)
class Transact:
    frame: Frame


@dataclass(frozen=True, slots=True)
class Ack:
    frame: Frame


@dataclass(frozen=True, slots=True)
class Report:
    items: tuple[Any, ...]


Output: TypeAlias = Transact | Ack | Report | Liveness
Exchange: TypeAlias = Generator[Output, "Frame | None", Any]


class FrameReader(DecodingReader[Frame | Malformed | None]):
    """The receiving side: bytes as they come, frames (or what is wrong with them) out;
    an item None is bytes that carry nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(codec.decode)


class PumpLink:
    """The data link with one pump: our TX#, whether the pump's last TX# is known to be ours,
    the last TX# it sent (to drop its repeats), and the exchanges that use them."""

    __slots__ = ("_poll", "address", "counters", "last_rx_seq", "retries", "synced", "tx_seq")

    def __init__(self, address: int, counters: LineCounters, retries: int) -> None:
        self.address = address
        self.counters = counters
        self.retries = retries
        self.tx_seq = 0
        # False until the pump has acknowledged a data frame of ours since we (or it) started:
        # until then it may hold any TX# as its last and would ignore a frame bearing it.
        self.synced = False
        self.last_rx_seq: int | None = None
        self._poll = Transact(codec.poll(address))  # the same every time: built once

    def restarted(self) -> None:
        """The pump (re)appeared: it may reuse any TX#, and remember any of ours or none."""
        self.last_rx_seq = None
        self.synced = False

    def _next_seq(self) -> int:
        self.tx_seq = (self.tx_seq + 1) % 16
        return self.tx_seq

    # ------------------------------------------------------------------ exchanges
    def accept(self, frame: Frame) -> Generator[Output, Frame | None, list[Any]]:
        """ACK a pump's data frame; its replies, unless it repeats one we already have."""
        yield Ack(codec.ack(self.address, frame.seq))
        if self.last_rx_seq == frame.seq:
            self.counters.duplicates_dropped += 1
            return []
        self.last_rx_seq = frame.seq
        replies = [codec.parse_reply(tx) for tx in frame.transactions]
        yield Report(tuple(replies))
        return replies

    def poll(self) -> Exchange:
        """One routine POLL: the pump's EOT, or its data frame acknowledged and reported."""
        reply = yield self._poll
        if reply is None:
            yield Liveness.MISSED
            return None
        yield Liveness.ANSWERED
        if reply.kind is FrameKind.DATA:
            yield from self.accept(reply)
        return None

    def command(
        self,
        items: tuple[Any, ...],
        expect: Callable[[Any], bool] | None,
        label: str,
        device: str,
        *,
        whole_frame: bool = False,
    ) -> Exchange:
        """Deliver a command (resyncing the TX# first if need be) until the pump ACKs it;
        then, when an answer is expected, poll until a data frame carries it."""
        if not self.synced:
            yield from self.resync(device)
        frame = codec.data(self.address, self._next_seq(), *items)
        tries = self.retries + 1
        for attempt in range(tries):
            if attempt:
                self.counters.retransmissions += 1
            reply = yield Transact(frame)
            if reply is None:
                yield Liveness.MISSED
                continue
            if reply.kind is FrameKind.NAK:
                self.counters.naks += 1
                yield Liveness.REFUSED
                continue
            yield Liveness.ANSWERED
            if reply.kind is FrameKind.ACK and reply.seq == self.tx_seq:
                break
            if reply.kind is FrameKind.DATA:
                # Some pumps answer a command with data at once: take it, then resend ours.
                yield from self.accept(reply)
            self.counters.unexpected += 1
        else:
            raise DeviceTimeout(f"{label}: no acknowledgement after {tries} tries", device=device)
        if expect is None:
            return None
        # The answer comes with the pump's next data frame: poll for it.
        for _ in range(self.retries + 3):
            reply = yield self._poll
            if reply is None:
                yield Liveness.MISSED
                continue
            yield Liveness.ANSWERED
            if reply.kind is FrameKind.DATA:
                replies = yield from self.accept(reply)
                # The newest matching item wins: a frame may carry a queued older status first.
                for item in reversed(replies):
                    if expect(item):
                        return replies if whole_frame else item
        # Acknowledged but never carried out looks like a frame taken for a repeat (the
        # pump's last TX# was ours): the next command pins the numbers again first.
        self.synced = False
        raise DeviceTimeout(f"{label}: the pump sent no answer", device=device)

    def resync(self, device: str) -> Generator[Output, Frame | None, None]:
        """Pin the pump's last TX# before the first command after a start, a reopen or the
        pump coming back. A harmless RETURN STATUS goes out under a fresh number until the
        pump acknowledges one: whether it executed it or took it for a repeat, its last
        number is then ours and the next frame is new to it. A pump that drops a repeat
        without a word still answers a POLL: that silence means "take another number"."""
        probe_items = (codec.Command(DCC.RETURN_STATUS),)
        for _ in range(RESYNC_ROUNDS):
            frame = codec.data(self.address, self._next_seq(), *probe_items)
            for _attempt in range(self.retries + 1):
                reply = yield Transact(frame)
                if reply is None:
                    there = yield self._poll
                    if there is None:
                        yield Liveness.MISSED
                        continue
                    yield Liveness.ANSWERED
                    if there.kind is FrameKind.DATA:
                        yield from self.accept(there)
                    break  # the pump is there and ignored the frame: a new number
                if reply.kind is FrameKind.NAK:
                    self.counters.naks += 1
                    yield Liveness.REFUSED
                    continue
                yield Liveness.ANSWERED
                if reply.kind is FrameKind.ACK and reply.seq == self.tx_seq:
                    self.synced = True
                    self.counters.resyncs += 1
                    return
                if reply.kind is FrameKind.DATA:
                    yield from self.accept(reply)
                self.counters.unexpected += 1
        raise DeviceTimeout(
            "the pump acknowledged no data frame: sequence numbers not synchronised",
            device=device,
        )
