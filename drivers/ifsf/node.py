"""The IFSF node core, sans I/O: tokens, request/reply matching, acks, timeouts and peers.

`NodeCore` is what one IFSF node (a controller or a dispenser) knows about the exchange of
messages, with no sockets and no clock of its own: every call takes `now` (seconds on any
monotonic clock), and what happened comes back as typed events for the I/O layer (links.py)
to act on. It is tested as plain code (tests/drivers/ifsf/test_node.py).

- Tokens (ifsf-over-ip.md §2): a request gets the next free 5-bit token of its peer, cycling
  1..31 and skipping tokens still waiting for their reply; the reply carries it back, so a
  reply is matched by (peer LNA, token).
- Replies (§2-§4): a Read completes with its Answer; a wildcard Read (FP 20, LN 10, PR 40,
  TR FP+20+0000 ...) collects one Answer per instance and completes with the closing Ack,
  whatever address that Ack names (the sources disagree on the "no more" address of the
  offline-sale read). A Write completes with its Ack. An Ack whose MS_ACK is not 0, or that
  carries a data ack other than 0, is a `Refused` error with every code; anything else is a
  typed reply (`ReadReply`, `WriteReply`).
- Timeouts: each request has a deadline; a wildcard read's is pushed back by each Answer, as
  a long list of unpaid sales may take a while. `tick(now)` expires them.
- Peers (§1): the heartbeats heard, by LNA; a peer not heard for `missed_heartbeats`
  intervals is lost, and its waiting requests fail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from drivers.base import (
    NO_ANSWER,
    CommandRejected,
    DeviceFault,
    DeviceTimeout,
    DriverError,
    FrameError,
    TransportError,
)
from drivers.ifsf import databases as db
from drivers.ifsf.codec import (
    HEADER_BYTES,
    MAX_TOKEN,
    MC_APPLICATION,
    MS_ACK,
    Ack,
    Answer,
    DataAck,
    DataItem,
    Message,
    MessageType,
    Read,
    Unsolicited,
    Write,
)
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat

DEFAULT_CD = Lna(2, 1)
# MS_ACK codes a request's refusal is named by in `Refused.code` (the rest: "ms_ack_N").
_REFUSAL_CODES = {
    1: "unreachable",
    2: "application_absent",
    3: "inconsistent",
    5: "data_refused",
    6: "unknown_database",
    7: "busy",
    8: "unexpected",
    9: "locked",
}


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
class Refused(CommandRejected):
    """A peer answered a request with an Ack that is not a plain yes: MS_ACK not 0, or a data
    ack not 0. `data_acks` holds every pair it sent (after MS_ACK 5: one per written item)."""

    def __init__(self, request: Message, reply: Message, *, device: str | None = None) -> None:
        assert isinstance(reply.body, Ack)
        self.request = request
        self.reply = reply
        self.ms_ack = reply.body.status
        self.data_acks: tuple[DataAck, ...] = reply.body.data_acks
        meaning = MS_ACK.get(self.ms_ack, "unknown code")
        text = f"{reply.originator} refused {request.type.name} of {request.database}: "
        text += f"MS_ACK {self.ms_ack} ({meaning})"
        refused = [pair for pair in self.data_acks if pair.code]
        if refused:
            pairs = ", ".join(
                f"{db.data_id_name(request.database, pair.data_id)} ({pair.data_id:02X}h): "
                f"{pair.code} {pair.meaning or 'unknown code'}"
                for pair in refused
            )
            text += f"; refused: {pairs}"
        code = _REFUSAL_CODES.get(self.ms_ack, f"ms_ack_{self.ms_ack}")
        if self.ms_ack == 0:
            code = "data_refused"
        super().__init__(text, device=device or str(reply.originator), code=code)

    def data_ack(self, data_id: int) -> int | None:
        """The data ack the peer gave `data_id`, if it gave one."""
        return next((pair.code for pair in self.data_acks if pair.data_id == data_id), None)


class TokensExhausted(DriverError):
    """All 31 tokens of a peer are waiting for replies: no request can be sent to it now."""

    code = "tokens_exhausted"


def peer_lost_error(lna: Lna) -> TransportError:
    return TransportError(
        "the peer's heartbeat stopped",
        device=str(lna),
        code="peer_lost",
        fault=DeviceFault(NO_ANSWER, f"IFSF node {lna} is no longer heard (heartbeat stopped)"),
    )


# ---------------------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------------------
def decode_items(address: db.Address, items: Iterable[DataItem]) -> dict[int, Any]:
    """Each item's typed value by data id: raw bytes for an id this codec does not know,
    FrameError for a known one whose bytes it cannot read."""
    values: dict[int, Any] = {}
    for data in items:
        if db.field_for(address, data.data_id) is None:
            values[data.data_id] = data.data
        else:
            values[data.data_id] = db.decode_value(address, data.data_id, data.data)
    return values


@dataclass(frozen=True, slots=True)
class ReadReply:
    """The answers to one Read: one Answer, or for a wildcard one per instance and `ack`, the
    Ack that closed the list."""

    request: Message
    answers: tuple[Message, ...]
    ack: Message | None = None

    def records(self) -> list[tuple[db.Address, dict[int, Any]]]:
        """(address, values by data id) of each answer, in the order they came."""
        out = []
        for answer in self.answers:
            assert isinstance(answer.body, Answer)
            out.append((answer.database, decode_items(answer.database, answer.body.items)))
        return out

    def values(self) -> dict[int, Any]:
        """The values of the first (for a plain Read, the only) answer; FrameError if there
        is none or it cannot be read."""
        if not self.answers:
            raise FrameError(
                f"no answer to the read of {self.request.database}",
                device=str(self.request.recipient),
            )
        return self.records()[0][1]


@dataclass(frozen=True, slots=True)
class WriteReply:
    """A write (or a command) the peer acknowledged with MS_ACK 0."""

    request: Message
    ack: Message


Outcome: TypeAlias = ReadReply | WriteReply | DriverError
RequestKey: TypeAlias = tuple[Lna, int]  # (peer, token)


# ---------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Peer:
    """A node heard on the heartbeat: where its TCP server listens, its status, when last."""

    lna: Lna
    ip: ipaddress.IPv4Address
    port: int
    status: int
    last_heard: float

    @property
    def endpoint(self) -> tuple[str, int]:
        return str(self.ip), self.port


@dataclass(frozen=True, slots=True)
class PeerHeard:
    """A node heard for the first time (or again after it was lost)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class PeerMoved:
    """A known node now advertises another IP or TCP port (it restarted elsewhere)."""

    peer: Peer
    previous: Peer


@dataclass(frozen=True, slots=True)
class PeerStatusChanged:
    """A known node's heartbeat status byte changed (Sinopec: 01 until configured, then 00)."""

    peer: Peer
    previous: int


@dataclass(frozen=True, slots=True)
class PeerLost:
    """A node missed `missed` heartbeats in a row: it is gone."""

    peer: Peer
    missed: int


PeerEvent: TypeAlias = PeerHeard | PeerMoved | PeerStatusChanged | PeerLost


# ---------------------------------------------------------------------------------------
# What a received message means
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Resolved:
    """A request of ours is done: `outcome` is its reply, or the error it ended with."""

    key: RequestKey
    request: Message
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Request:
    """A peer's Read or Write addressed to one of our LNAs: the application answers it."""

    message: Message


@dataclass(frozen=True, slots=True)
class Misaddressed:
    """A peer's Read or Write to an LNA that is not ours: answer MS_ACK 1."""

    message: Message


@dataclass(frozen=True, slots=True)
class Report:
    """An unsolicited message (FP status, running transaction, TR buffer, error)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Stray:
    """A reply that matches no waiting request (late, duplicated, or of a request we gave up)."""

    message: Message
    reason: str


NodeEvent: TypeAlias = Resolved | Request | Misaddressed | Report | Stray | PeerEvent


def is_wildcard(address: db.Address) -> bool:
    """Whether a read of `address` is answered once per instance, then closed by an Ack."""
    match address:
        case db.FuellingPoint(fp=fp) | db.ErrorEntry(fp=fp):
            return fp == 0
        case db.LogicalNozzle(fp=fp, nozzle=nozzle):
            return fp == 0 or nozzle == 0
        case db.TransactionBuffer(fp=fp, every=every):
            return every or fp == 0
        case db.Product(pr=pr):
            return pr == 0
        case db.ProductPerMode(mode=mode):
            return mode == 0
        case db.Meter(meter=meter):
            return meter == 0
    return False


# ---------------------------------------------------------------------------------------
# Building replies and reports (a dispenser node answers with these)
# ---------------------------------------------------------------------------------------
def answer(
    request: Message, items: Iterable[DataItem], *, database: db.Address | None = None
) -> Message:
    """The Answer to a Read: same token, addresses swapped, MC 0 (as dispensers answer).
    `database` is the instance's address when answering a wildcard read."""
    return Message(
        request.originator,
        request.recipient,
        request.token,
        database or request.database,
        Answer(tuple(items)),
    )


def ack(
    request: Message,
    status: int = 0,
    data_acks: Iterable[DataAck] = (),
    *,
    database: db.Address | None = None,
) -> Message:
    """The Ack to a request (MS_ACK `status`, the data acks after MS_ACK 5)."""
    return Message(
        request.originator,
        request.recipient,
        request.token,
        database or request.database,
        Ack(status, tuple(data_acks)),
    )


def unsolicited(
    originator: Lna,
    recipient: Lna,
    database: db.Address,
    items: Iterable[DataItem],
    *,
    acknowledged: bool = False,
) -> Message:
    """An unsolicited message (token 0, as every dispenser sends them): `items` start with
    the container id (64h or 66h, no data)."""
    return Message(recipient, originator, 0, database, Unsolicited(tuple(items), acknowledged))


# ---------------------------------------------------------------------------------------
# The core
# ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Pending:
    request: Message
    deadline: float
    timeout_s: float
    wildcard: bool
    answers: list[Message] = field(default_factory=list)


class NodeCore:
    """One node's view of its exchanges. `lnas` are its own addresses (a controller has one;
    a dispenser board with one node per nozzle has several); the first is the originator of
    its requests unless another is given."""

    def __init__(
        self,
        lnas: Iterable[Lna] = (DEFAULT_CD,),
        *,
        reply_timeout_s: float = 5.0,
        heartbeat_interval_s: float = 10.0,
        missed_heartbeats: int = 3,
        check_recipient: bool = True,
    ) -> None:
        self.lnas: tuple[Lna, ...] = tuple(lnas)
        if not self.lnas:
            raise ValueError("a node needs at least one LNA")
        if reply_timeout_s <= 0 or heartbeat_interval_s <= 0 or missed_heartbeats < 1:
            raise ValueError("timeouts and intervals are positive, missed_heartbeats >= 1")
        self.reply_timeout_s = reply_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.missed_heartbeats = missed_heartbeats
        self.check_recipient = check_recipient
        self._pending: dict[RequestKey, _Pending] = {}
        self._next_token: dict[Lna, int] = {}
        self._peers: dict[Lna, Peer] = {}

    # ------------------------------------------------------------------ peers
    @property
    def peers(self) -> Mapping[Lna, Peer]:
        return dict(self._peers)

    def peer(self, lna: Lna) -> Peer | None:
        return self._peers.get(lna)

    @property
    def lost_after_s(self) -> float:
        return self.heartbeat_interval_s * self.missed_heartbeats

    def heard(self, heartbeat: Heartbeat, now: float) -> list[PeerEvent]:
        """A heartbeat arrived. Our own (a broadcast comes back to its sender) is ignored."""
        if heartbeat.lna in self.lnas:
            return []
        peer = Peer(heartbeat.lna, heartbeat.ip, heartbeat.port, heartbeat.status, now)
        known = self._peers.get(heartbeat.lna)
        self._peers[heartbeat.lna] = peer
        if known is None:
            return [PeerHeard(peer)]
        if known.endpoint != peer.endpoint:
            return [PeerMoved(peer, known)]
        if known.status != peer.status:
            return [PeerStatusChanged(peer, known.status)]
        return []

    def forget(self, lna: Lna) -> list[Resolved]:
        """Drop a peer now (its requests fail as if it were lost)."""
        peer = self._peers.pop(lna, None)
        if peer is None:
            return []
        return self._fail_peer(lna, peer_lost_error(lna))

    # ------------------------------------------------------------------ requests
    @property
    def pending(self) -> int:
        return len(self._pending)

    def waiting(self, key: RequestKey) -> bool:
        return key in self._pending

    def _token(self, peer: Lna) -> int:
        start = self._next_token.get(peer, 1)
        for step in range(MAX_TOKEN):
            token = (start - 1 + step) % MAX_TOKEN + 1
            if (peer, token) not in self._pending:
                self._next_token[peer] = token % MAX_TOKEN + 1
                return token
        raise TokensExhausted(
            f"{MAX_TOKEN} requests to {peer} are waiting for replies", device=str(peer)
        )

    def request(
        self,
        peer: Lna,
        database: db.Address,
        body: Read | Write,
        now: float,
        *,
        mc: int = MC_APPLICATION,
        originator: Lna | None = None,
        timeout_s: float | None = None,
    ) -> Message:
        """A Read or Write to `peer` with its token: send the message, then wait for the
        `Resolved` event of key (peer, message.token)."""
        if not isinstance(body, Read | Write):
            raise ValueError("a request is a Read or a Write")
        token = self._token(peer)
        message = Message(peer, originator or self.lnas[0], token, database, body, mc)
        timeout = self.reply_timeout_s if timeout_s is None else timeout_s
        self._pending[(peer, token)] = _Pending(
            message, now + timeout, timeout, isinstance(body, Read) and is_wildcard(database)
        )
        return message

    def cancel(self, key: RequestKey) -> None:
        """Give up a request (it could not be sent, or its caller went away); a late reply
        to it is then a Stray."""
        self._pending.pop(key, None)

    def receive(self, message: Message, now: float) -> list[NodeEvent]:
        """What a message from a peer means."""
        kind = message.type
        if kind in (MessageType.ANSWER, MessageType.ACK):
            return self._reply(message, now)
        if kind in (MessageType.READ, MessageType.WRITE):
            if self.check_recipient and message.recipient not in self.lnas:
                return [Misaddressed(message)]
            return [Request(message)]
        # Unsolicited: accepted whatever LNA it names (a dispenser may not check the CD's
        # subnet, ifsf-over-ip.md §1), as it is what the peer thinks we should know.
        return [Report(message)]

    def _reply(self, message: Message, now: float) -> list[NodeEvent]:
        key = (message.originator, message.token)
        waiting = self._pending.get(key)
        if waiting is None:
            return [Stray(message, f"no request with token {message.token} is waiting")]
        request = waiting.request
        if isinstance(message.body, Answer):
            if not isinstance(request.body, Read):
                return [Stray(message, f"an Answer to a {request.type.name}")]
            waiting.answers.append(message)
            if waiting.wildcard:
                waiting.deadline = now + waiting.timeout_s
                return []
            return [self._resolve(key, ReadReply(request, tuple(waiting.answers)))]
        assert isinstance(message.body, Ack)
        refused = message.body.status != 0 or any(pair.code for pair in message.body.data_acks)
        if refused:
            return [self._resolve(key, Refused(request, message))]
        if isinstance(request.body, Read):
            return [self._resolve(key, ReadReply(request, tuple(waiting.answers), message))]
        return [self._resolve(key, WriteReply(request, message))]

    def receive_malformed(self, raw: bytes, now: float) -> list[NodeEvent]:
        """A message framed by its M_Lg but unreadable. If its header still names a reply to
        a waiting request (originator and token), that request fails with the FrameError
        now rather than at its timeout."""
        if len(raw) < HEADER_BYTES or raw[5] >> 5 not in (MessageType.ANSWER, MessageType.ACK):
            return []
        key = (Lna(raw[2], raw[3]), raw[5] & MAX_TOKEN)
        if key not in self._pending:
            return []
        error = FrameError(
            f"unreadable reply: {raw.hex(' ').upper()}", device=str(key[0]), code="malformed"
        )
        return [self._resolve(key, error)]

    def _resolve(self, key: RequestKey, outcome: Outcome) -> Resolved:
        waiting = self._pending.pop(key)
        return Resolved(key, waiting.request, outcome)

    def _fail_peer(self, lna: Lna, error: DriverError) -> list[Resolved]:
        keys = [key for key in self._pending if key[0] == lna]
        return [self._resolve(key, error) for key in keys]

    # ------------------------------------------------------------------ time
    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (a reply timeout, a peer to declare lost)."""
        times = [waiting.deadline for waiting in self._pending.values()]
        times += [peer.last_heard + self.lost_after_s for peer in self._peers.values()]
        return min(times, default=None)

    def tick(self, now: float) -> list[NodeEvent]:
        """Requests past their deadline fail with DeviceTimeout; peers not heard for
        `missed_heartbeats` intervals are lost, and their requests fail with them."""
        events: list[NodeEvent] = []
        for lna, peer in list(self._peers.items()):
            if now >= peer.last_heard + self.lost_after_s:
                del self._peers[lna]
                missed = int((now - peer.last_heard) // self.heartbeat_interval_s)
                events.append(PeerLost(peer, missed))
                events.extend(self._fail_peer(lna, peer_lost_error(lna)))
        for key, waiting in list(self._pending.items()):
            if now >= waiting.deadline:
                request = waiting.request
                error = DeviceTimeout(
                    f"no reply to {request.type.name} of {request.database} "
                    f"(token {request.token}) within {waiting.timeout_s:g} s",
                    device=str(key[0]),
                )
                events.append(self._resolve(key, error))
        return events
