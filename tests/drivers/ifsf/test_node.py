"""The sans-I/O node core: tokens, reply matching, acks, timeouts and peers, no sockets."""

from __future__ import annotations

import ipaddress
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import DeviceTimeout, FrameError, TransportError
from drivers.ifsf import databases as db
from drivers.ifsf.codec import (
    Ack,
    DataAck,
    Message,
    Read,
    Unsolicited,
    Write,
    decode_message,
    encode,
)
from drivers.ifsf.codec import item as it
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat
from drivers.ifsf.node import (
    Misaddressed,
    NodeCore,
    PeerHeard,
    PeerLost,
    PeerMoved,
    PeerStatusChanged,
    ReadReply,
    Refused,
    Report,
    Request,
    Resolved,
    Stray,
    TokensExhausted,
    WriteReply,
    ack,
    answer,
    is_wildcard,
    unsolicited,
)

CD = Lna(2, 1)
PUMP = Lna(1, 3)
FP1 = db.FuellingPoint(1)
LOCAL = ipaddress.IPv4Address("192.168.0.20")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def core(**kwargs: object) -> NodeCore:
    return NodeCore((CD,), **kwargs)  # type: ignore[arg-type]


def resolved(events: list[object]) -> Resolved:
    assert len(events) == 1 and isinstance(events[0], Resolved), events
    return events[0]


# ------------------------------------------------------------------------------ tokens
def test_tokens_cycle_1_to_31_per_peer() -> None:
    node = core()
    tokens = []
    for _ in range(31):
        message = node.request(PUMP, FP1, Read((0x14,)), 0.0)
        tokens.append(message.token)
        node.cancel((PUMP, message.token))
    assert tokens == list(range(1, 32))
    assert node.request(PUMP, FP1, Read((0x14,)), 0.0).token == 1
    # Another peer has its own sequence.
    assert node.request(Lna(1, 4), FP1, Read((0x14,)), 0.0).token == 1


def test_a_token_still_waiting_is_skipped_and_32_waiting_requests_are_refused() -> None:
    node = core()
    first = node.request(PUMP, FP1, Read((0x14,)), 0.0)
    for _ in range(30):
        node.request(PUMP, FP1, Read((0x14,)), 0.0)
    with pytest.raises(TokensExhausted):
        node.request(PUMP, FP1, Read((0x14,)), 0.0)
    node.cancel((PUMP, first.token))
    assert node.request(PUMP, FP1, Read((0x14,)), 0.0).token == first.token


def test_request_message_is_the_capture_of_e2() -> None:
    node = core()
    for _ in range(29):
        node.cancel((PUMP, node.request(PUMP, FP1, Read((0x14,)), 0.0).token))
    message = node.request(PUMP, FP1, Read((0x14,)), 0.0)
    assert encode(message) == h("01 03 02 01 00 1E 00 03 01 21 14")  # token 30


# ------------------------------------------------------------------------------ replies
def test_answer_completes_a_read_with_typed_values() -> None:
    node = core()
    request = node.request(PUMP, FP1, Read((0x14,)), 0.0)
    reply = decode_message(h(f"02 01 01 03 00 {0x20 | request.token:02X} 00 05 01 21 14 01 02"))
    outcome = resolved(node.receive(reply, 0.1)).outcome
    assert isinstance(outcome, ReadReply)
    assert outcome.values() == {0x14: 2}
    assert node.pending == 0


def test_ack_0_completes_a_write_and_data_acks_5_refuse_it() -> None:
    node = core()
    write = Write((it(FP1, 0x1B, Decimal("100.000")), it(FP1, 0x3E)))
    request = node.request(PUMP, FP1, write, 0.0)
    accepted = resolved(node.receive(ack(request), 0.1)).outcome
    assert isinstance(accepted, WriteReply)

    request = node.request(PUMP, FP1, write, 0.0)
    refusal = ack(request, 5, [DataAck(0x1B, 0), DataAck(0x3E, 3)])
    outcome = resolved(node.receive(refusal, 0.1)).outcome
    assert isinstance(outcome, Refused)
    assert outcome.ms_ack == 5 and outcome.code == "data_refused"
    assert outcome.data_ack(0x3E) == 3 and outcome.data_ack(0x1B) == 0
    assert "Release_FP (3Eh): 3 command refused in this state" in str(outcome)


def test_e3_refusal_capture_is_a_typed_refusal() -> None:
    node = core()
    for _ in range(11):
        node.cancel((PUMP, node.request(PUMP, FP1, Read((0x14,)), 0.0).token))
    request = node.request(PUMP, FP1, Write((it(FP1, 0x3E),)), 0.0)
    assert request.token == 12
    reply = decode_message(h("02 01 01 03 00 EC 00 0B 01 21 05 1B 00 1E 00 19 00 3E 03"))
    outcome = resolved(node.receive(reply, 0.2)).outcome
    assert isinstance(outcome, Refused) and outcome.data_ack(0x3E) == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (1, "unreachable"),
        (2, "application_absent"),
        (3, "inconsistent"),
        (6, "unknown_database"),
        (7, "busy"),
        (8, "unexpected"),
        (9, "locked"),
        (4, "ms_ack_4"),
    ],
)
def test_every_ms_ack_code_refuses_with_its_name(status: int, code: str) -> None:
    node = core()
    request = node.request(PUMP, FP1, Write((it(FP1, 0x3C),)), 0.0)
    outcome = resolved(node.receive(ack(request, status), 0.1)).outcome
    assert isinstance(outcome, Refused)
    assert outcome.ms_ack == status and outcome.code == code
    assert outcome.device == str(PUMP)


def test_ack_0_with_a_refused_data_ack_is_still_a_refusal() -> None:
    node = core()
    request = node.request(PUMP, FP1, Write((it(FP1, 0x3C),)), 0.0)
    outcome = resolved(node.receive(ack(request, 0, [DataAck(0x3C, 3)]), 0.1)).outcome
    assert isinstance(outcome, Refused) and outcome.code == "data_refused"


def test_a_read_refused_by_ack_6() -> None:
    node = core()
    request = node.request(PUMP, db.Meter(9), Read((0x14,)), 0.0)
    outcome = resolved(node.receive(ack(request, 6), 0.1)).outcome
    assert isinstance(outcome, Refused) and outcome.code == "unknown_database"


def test_wildcard_read_collects_answers_until_the_closing_ack() -> None:
    node = core()
    every = db.TransactionBuffer(1, 0, every=True)
    request = node.request(PUMP, every, Read((0x01, 0x15)), 0.0)
    for seq in (7, 8):
        entry = db.TransactionBuffer(1, seq)
        items = [it(entry, 0x01, seq), it(entry, 0x15, 2)]
        assert node.receive(answer(request, items, database=entry), 0.1) == []
    # The "no more" ack may name another form of the address (ZSY 21 20 0000).
    closing = ack(request, database=db.TransactionBuffer(1, 0, every=True))
    outcome = resolved(node.receive(closing, 0.2)).outcome
    assert isinstance(outcome, ReadReply)
    assert [values for _, values in outcome.records()] == [
        {0x01: 7, 0x15: 2},
        {0x01: 8, 0x15: 2},
    ]
    assert outcome.ack is not None


def test_wildcard_read_with_nothing_to_report_is_an_empty_reply() -> None:
    node = core()
    request = node.request(PUMP, db.TransactionBuffer(1, 0, every=True), Read((0x01,)), 0.0)
    outcome = resolved(node.receive(ack(request), 0.1)).outcome
    assert isinstance(outcome, ReadReply) and outcome.answers == ()
    with pytest.raises(FrameError):
        outcome.values()


@pytest.mark.parametrize(
    ("address", "wildcard"),
    [
        (db.FuellingPoint(0), True),
        (db.FuellingPoint(1), False),
        (db.LogicalNozzle(1, 0), True),
        (db.LogicalNozzle(1, 2), False),
        (db.TransactionBuffer(1, 0, every=True), True),
        (db.TransactionBuffer(1, 5), False),
        (db.TransactionBuffer(0, 0), True),
        (db.Product(0), True),
        (db.Product(2), False),
        (db.ProductPerMode(8, 0), True),
        (db.ProductPerMode(8, 1), False),
        (db.Meter(0), True),
        (db.Meter(3), False),
        (db.ErrorEntry(0, 0x99), True),
        (db.ErrorEntry(1, 0x99), False),
        (db.COM_SV, False),
        (db.C_DAT, False),
    ],
)
def test_wildcards(address: db.Address, wildcard: bool) -> None:
    assert is_wildcard(address) is wildcard


def test_a_reply_matching_nothing_is_stray() -> None:
    node = core()
    events = node.receive(decode_message(h("02 01 01 04 00 F1 00 03 01 21 00")), 0.0)
    assert len(events) == 1 and isinstance(events[0], Stray)
    # A reply from another peer with a waiting token of this one is stray too.
    request = node.request(PUMP, FP1, Read((0x14,)), 0.0)
    other = Message(CD, Lna(1, 9), request.token, FP1, Ack(0))
    assert isinstance(node.receive(other, 0.1)[0], Stray)
    assert node.waiting((PUMP, request.token))


def test_an_answer_to_a_write_is_stray_and_the_write_still_waits() -> None:
    node = core()
    request = node.request(PUMP, FP1, Write((it(FP1, 0x3C),)), 0.0)
    events = node.receive(answer(request, [it(FP1, 0x14, 3)]), 0.1)
    assert isinstance(events[0], Stray)
    assert node.waiting((PUMP, request.token))


def test_a_malformed_reply_fails_its_request_now() -> None:
    node = core()
    request = node.request(PUMP, FP1, Read((0x14,)), 0.0)
    raw = h(f"02 01 01 03 00 {0x20 | request.token:02X} 00 04 01 21 14 05")  # item cut short
    outcome = resolved(node.receive_malformed(raw, 0.1)).outcome
    assert isinstance(outcome, FrameError)
    assert node.receive_malformed(h("00 01 02"), 0.1) == []
    assert node.receive_malformed(raw, 0.2) == []  # nothing waits for it any more


# ------------------------------------------------------------------------------ requests to us
def test_requests_to_us_to_others_and_reports() -> None:
    node = NodeCore((Lna(1, 9), Lna(1, 10)))
    read = decode_message(h("01 0A 02 01 00 05 00 03 01 21 14"))
    assert node.receive(read, 0.0) == [Request(read)]
    other = decode_message(h("01 0B 02 01 00 05 00 03 01 21 14"))
    assert node.receive(other, 0.0) == [Misaddressed(other)]
    tolerant = NodeCore((Lna(1, 9),), check_recipient=False)
    assert tolerant.receive(other, 0.0) == [Request(other)]
    # Unsolicited data is taken whatever LNA it names (E4, addressed to 2.1).
    report = decode_message(
        h("02 01 01 03 00 80 00 18 01 21 64 00 14 01 06 15 01 01 16 02 00 00 50 08") + bytes(8)
    )
    assert node.receive(report, 0.0) == [Report(report)]


def test_reply_builders_swap_addresses_and_keep_the_token() -> None:
    request = decode_message(h("01 03 02 01 00 1E 00 03 01 21 14"))
    assert encode(answer(request, [it(FP1, 0x14, 2)])) == h(
        "02 01 01 03 00 3E 00 05 01 21 14 01 02"
    )
    write = decode_message(h("01 03 02 01 02 4B 00 06 01 00 0B 02 02 01"))
    assert encode(ack(write)) == h("02 01 01 03 00 EB 00 03 01 00 00")
    report = unsolicited(PUMP, CD, FP1, [it(FP1, 0x64), it(FP1, 0x14, 6)])
    assert report.token == 0 and isinstance(report.body, Unsolicited)
    assert encode(report)[:8] == h("02 01 01 03 00 80 00 07")


# ------------------------------------------------------------------------------ time
def test_a_request_times_out_at_its_deadline_by_ticks() -> None:
    node = core(reply_timeout_s=2.0)
    request = node.request(PUMP, FP1, Read((0x14,)), 10.0)
    assert node.next_deadline() == 12.0
    assert node.tick(11.9) == []
    outcome = resolved(node.tick(12.0)).outcome
    assert isinstance(outcome, DeviceTimeout) and outcome.device == str(PUMP)
    assert "token 1" in str(outcome)
    late = answer(request, [it(FP1, 0x14, 3)])
    assert isinstance(node.receive(late, 12.5)[0], Stray)


def test_each_answer_of_a_wildcard_read_pushes_its_deadline_back() -> None:
    node = core(reply_timeout_s=1.0)
    request = node.request(PUMP, db.FuellingPoint(0), Read((0x14,)), 0.0)
    node.receive(answer(request, [it(FP1, 0x14, 3)], database=FP1), 0.9)
    assert node.tick(1.5) == []
    assert isinstance(resolved(node.tick(1.9)).outcome, DeviceTimeout)


def test_a_request_has_its_own_timeout() -> None:
    node = core(reply_timeout_s=5.0)
    node.request(PUMP, FP1, Read((0x14,)), 0.0, timeout_s=0.5)
    assert node.next_deadline() == 0.5


# ------------------------------------------------------------------------------ peers
def hb(lna: Lna = PUMP, port: int = 4001, status: int = 0, ip: str = "192.168.0.31") -> Heartbeat:
    return Heartbeat(ipaddress.IPv4Address(ip), port, lna, status)


def test_peer_heard_moved_status_and_own_heartbeat_ignored() -> None:
    node = core()
    [heard] = node.heard(hb(), 0.0)
    assert isinstance(heard, PeerHeard) and heard.peer.endpoint == ("192.168.0.31", 4001)
    assert node.heard(hb(), 1.0) == []
    [changed] = node.heard(hb(status=1), 2.0)
    assert isinstance(changed, PeerStatusChanged) and changed.previous == 0
    [moved] = node.heard(hb(port=4002, status=1), 3.0)
    assert isinstance(moved, PeerMoved) and moved.previous.port == 4001
    assert node.heard(hb(lna=CD), 3.0) == []  # our own broadcast, come back
    assert set(node.peers) == {PUMP}


def test_a_peer_is_lost_after_the_configured_missed_heartbeats_with_its_requests() -> None:
    node = core(heartbeat_interval_s=10.0, missed_heartbeats=3, reply_timeout_s=100.0)
    node.heard(hb(), 0.0)
    node.heard(hb(lna=Lna(1, 4), port=4004), 0.0)
    node.heard(hb(), 20.0)
    request = node.request(PUMP, FP1, Read((0x14,)), 21.0)
    assert node.next_deadline() == 30.0  # 1.4 last heard at 0
    [lost] = node.tick(30.0)
    assert isinstance(lost, PeerLost) and lost.peer.lna == Lna(1, 4) and lost.missed == 3
    assert node.tick(49.9) == []
    events = node.tick(50.0)
    assert isinstance(events[0], PeerLost) and events[0].peer.lna == PUMP
    failed = events[1]
    assert isinstance(failed, Resolved) and failed.request == request
    assert isinstance(failed.outcome, TransportError) and failed.outcome.code == "peer_lost"
    assert node.peers == {} and node.pending == 0
    [again] = node.heard(hb(), 60.0)
    assert isinstance(again, PeerHeard)


def test_forget_fails_the_peers_requests() -> None:
    node = core()
    node.heard(hb(), 0.0)
    node.request(PUMP, FP1, Read((0x14,)), 0.0)
    [failed] = node.forget(PUMP)
    assert isinstance(failed.outcome, TransportError)
    assert node.forget(PUMP) == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        NodeCore(())
    with pytest.raises(ValueError):
        core(missed_heartbeats=0)
    with pytest.raises(ValueError):
        core(reply_timeout_s=0)


# ------------------------------------------------------------------------------ properties
_PEERS = [Lna(1, n) for n in (1, 2, 3)]
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from(_PEERS), st.booleans()),
        st.tuples(st.just("reply"), st.integers(0, 200), st.sampled_from([0, 0, 5, 7])),
        st.tuples(st.just("stray"), st.sampled_from(_PEERS), st.integers(1, 31)),
        st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_every_request_resolves_once_and_tokens_never_clash(ops: list[tuple]) -> None:
    """Whatever the order of requests, replies, strays and time: a waiting token is never
    handed out twice to one peer, each request is resolved exactly once, and a reply to a
    request resolves exactly that request."""
    node = core(reply_timeout_s=2.0)
    now = 0.0
    issued: dict[tuple[Lna, int], Message] = {}
    resolved_requests: list[Message] = []
    total = 0

    def take(events: list[object]) -> None:
        for event in events:
            if isinstance(event, Resolved):
                assert issued.pop(event.key) == event.request
                resolved_requests.append(event.request)

    for op in ops:
        if op[0] == "request":
            _, peer, is_write = op
            body = Write((it(FP1, 0x3C),)) if is_write else Read((0x14,))
            try:
                message = node.request(peer, FP1, body, now)
            except TokensExhausted:
                assert sum(1 for key in issued if key[0] == peer) == 31
                continue
            key = (peer, message.token)
            assert key not in issued
            issued[key] = message
            total += 1
        elif op[0] == "reply" and issued:
            _, pick, status = op
            key = sorted(issued, key=lambda k: (k[0], k[1]))[pick % len(issued)]
            request = issued[key]
            if isinstance(request.body, Read) and status == 0:
                reply = answer(request, [it(FP1, 0x14, 3)])
            else:
                reply = ack(request, status)
            events = node.receive(reply, now)
            assert [type(e) for e in events] == [Resolved]
            take(events)
        elif op[0] == "stray":
            _, peer, token = op
            events = node.receive(Message(CD, peer, token, FP1, Ack(0)), now)
            take(events)  # a match, if that token waits, else a Stray
        elif op[0] == "tick":
            now += op[1]
            take(node.tick(now))
        assert node.pending == len(issued)
    take(node.tick(now + 10.0))
    assert issued == {} and node.pending == 0
    assert len(resolved_requests) == total
