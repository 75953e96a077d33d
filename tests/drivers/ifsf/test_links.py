"""The IFSF node on loopback: a controller and a small dispenser peer, both IfsfNode."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import structlog

from drivers.base import (
    CommandRejected,
    DeviceTimeout,
    DriverError,
    FrameError,
    TransportError,
)
from drivers.ifsf import databases as db
from drivers.ifsf.codec import FramingLost, Message, MessageType, Read, decode_message, encode
from drivers.ifsf.codec import item as it
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat, encode_heartbeat
from drivers.ifsf.links import (
    IfsfNode,
    LinkDown,
    LinkEvent,
    LinkSettings,
    LinkUp,
    jittered,
    next_backoff,
)
from drivers.ifsf.node import (
    PeerHeard,
    PeerLost,
    PeerMoved,
    ReadReply,
    Refused,
    WriteReply,
    answer,
    unsolicited,
)
from tests.drivers.ifsf.loopback import (
    CD,
    DISPENSER,
    FAST,
    LoopbackDispenser,
    free_tcp_port,
    free_udp_port,
    loopback_settings,
)

FP1 = db.FuellingPoint(1)


@dataclass
class Pair:
    cd: IfsfNode
    dispenser: IfsfNode
    app: LoopbackDispenser
    cd_events: list[LinkEvent] = field(default_factory=list)
    disp_events: list[LinkEvent] = field(default_factory=list)
    reports: list[object] = field(default_factory=list)
    errors: list[DriverError] = field(default_factory=list)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    app = LoopbackDispenser()
    cd_events: list[LinkEvent] = []
    disp_events: list[LinkEvent] = []
    reports: list[object] = []
    errors: list[DriverError] = []
    cd = IfsfNode(
        loopback_settings([CD], cd_hb, disp_hb),
        name="cd",
        on_event=cd_events.append,
        on_report=reports.append,
        on_error=errors.append,
    )
    dispenser = IfsfNode(
        loopback_settings([DISPENSER], disp_hb, cd_hb),
        name="dispenser",
        on_request=app.on_request,
        on_event=disp_events.append,
    )
    app.node = dispenser
    async with cd, dispenser:
        yield Pair(cd, dispenser, app, cd_events, disp_events, reports, errors)


async def test_heartbeats_are_heard_and_both_links_open(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    peer = pair.cd.peers[DISPENSER]
    assert peer.endpoint == ("127.0.0.1", pair.dispenser.tcp_port)
    assert pair.dispenser.peers[CD].port == pair.cd.tcp_port
    assert any(isinstance(e, PeerHeard) for e in pair.cd_events)
    assert any(isinstance(e, LinkUp) for e in pair.cd_events)
    link = pair.cd._link_of(DISPENSER)
    assert link is not None and link.writer is not None
    sock = link.writer.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


async def test_read_is_answered(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    reply = await pair.cd.read(DISPENSER, FP1, [0x14])
    assert isinstance(reply, ReadReply)
    assert reply.values() == {0x14: 2}


async def test_wildcard_read_over_the_wire(pair: Pair) -> None:
    pair.app.fp_states = {1: 3, 2: 2}
    await pair.cd.wait_link(DISPENSER, 3)
    reply = await pair.cd.read(DISPENSER, db.FuellingPoint(0), [0x14])
    assert [(a, v) for a, v in reply.records()] == [
        (db.FuellingPoint(1), {0x14: 3}),
        (db.FuellingPoint(2), {0x14: 2}),
    ]
    assert reply.ack is not None


async def test_command_is_acked_then_the_state_change_is_reported(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    done = await pair.cd.command(DISPENSER, FP1, 0x3C)
    assert isinstance(done, WriteReply)
    await until(lambda: bool(pair.reports))
    report = pair.reports[0]
    assert isinstance(report, Message) and report.originator == DISPENSER
    assert report.type is MessageType.UNSOLICITED


async def test_refusals_are_typed_with_their_codes(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    pair.app.fp_states[1] = 3  # Idle: Open_FP is refused with data ack 3
    with pytest.raises(Refused) as refused:
        await pair.cd.command(DISPENSER, FP1, 0x3C)
    assert refused.value.ms_ack == 5 and refused.value.data_ack(0x3C) == 3
    pair.app.busy = True
    with pytest.raises(Refused) as busy:
        await pair.cd.read(DISPENSER, FP1, [0x14])
    assert busy.value.code == "busy"
    assert isinstance(busy.value, CommandRejected)
    pair.app.busy = False
    with pytest.raises(Refused) as unknown:
        await pair.cd.read(DISPENSER, db.Meter(3), [0x14])
    assert unknown.value.code == "unknown_database"


async def test_a_silent_peer_times_out_and_the_node_goes_on(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    pair.app.silent = True
    with pytest.raises(DeviceTimeout):
        await pair.cd.read(DISPENSER, FP1, [0x14], timeout=0.3)
    assert pair.cd.counters.timeouts == 1
    pair.app.silent = False
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}


async def test_requests_in_flight_together_are_matched_by_token(pair: Pair) -> None:
    pair.app.fp_states = {1: 2, 2: 3, 3: 6}
    await pair.cd.wait_link(DISPENSER, 3)
    replies = await asyncio.gather(
        *(pair.cd.read(DISPENSER, db.FuellingPoint(fp), [0x14]) for fp in (1, 2, 3) * 5)
    )
    assert [r.values()[0x14] for r in replies] == [2, 3, 6] * 5
    assert len({r.request.token for r in replies}) == 15


async def test_peer_gone_after_the_missed_heartbeats(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    lost_at = asyncio.get_running_loop().time()
    await pair.dispenser.stop()
    await until(lambda: any(isinstance(e, PeerLost) for e in pair.cd_events))
    waited = asyncio.get_running_loop().time() - lost_at
    assert 0.8 <= waited < 5.0  # 10 missed heartbeats of 0.1 s, and some slack
    assert DISPENSER not in pair.cd.peers
    assert not pair.cd.is_up(DISPENSER)
    with pytest.raises(TransportError) as no_peer:
        await pair.cd.read(DISPENSER, FP1, [0x14], timeout=0.2)
    assert no_peer.value.fault is not None and no_peer.value.fault.code == "unreachable"


async def test_a_waiting_request_fails_when_its_peer_is_lost(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    pair.app.silent = True
    waiting = asyncio.create_task(pair.cd.read(DISPENSER, FP1, [0x14], timeout=5))
    await asyncio.sleep(0.05)
    await pair.dispenser.stop()
    with pytest.raises(TransportError) as lost:
        await waiting
    assert lost.value.code == "peer_lost"


async def test_peer_restart_reconnects_both_links(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    port, hb_port = pair.dispenser.tcp_port, pair.dispenser.heartbeat_port
    settings = pair.dispenser.settings
    await pair.dispenser.stop()
    await until(lambda: not pair.cd.is_up(DISPENSER))
    app = LoopbackDispenser(fp_states={1: 3})
    again = IfsfNode(
        replace(settings, tcp_port=port, heartbeat_port=hb_port), on_request=app.on_request
    )
    async with again:
        await pair.cd.wait_link(DISPENSER, 3)
        await again.wait_link(CD, 3)
        assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 3}
    downs = [e for e in pair.cd_events if isinstance(e, LinkDown)]
    ups = [e for e in pair.cd_events if isinstance(e, LinkUp)]
    assert downs and len(ups) >= 2
    assert pair.cd.counters.reopens >= 1


async def test_peer_restarted_on_another_port_is_followed(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    settings = pair.dispenser.settings
    hb_port = pair.dispenser.heartbeat_port
    await pair.dispenser.stop()
    app = LoopbackDispenser(fp_states={1: 4})
    async with IfsfNode(replace(settings, heartbeat_port=hb_port), on_request=app.on_request):
        await until(
            lambda: (
                any(isinstance(e, PeerMoved) for e in pair.cd_events)
                or any(isinstance(e, PeerLost) for e in pair.cd_events)
            )
        )
        await pair.cd.wait_link(DISPENSER, 3)
        assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 4}


async def test_misaddressed_requests_get_ms_ack_1(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    # The dispenser's node is 1.1; a request to 1.1 goes through, the same bytes to 1.7
    # (carried on our link to 1.1) is answered MS_ACK 1 by the node itself.
    link = pair.cd._link_of(DISPENSER)
    assert link is not None
    message = pair.cd.core.request(DISPENSER, FP1, Read((0x14,)), 0.0)
    pair.cd.core.cancel((DISPENSER, message.token))
    wrong = replace(message, recipient=Lna(1, 7))
    stray_before = pair.cd.counters.unexpected
    await link.send(encode(wrong), queue=False)
    await until(lambda: pair.cd.counters.unexpected > stray_before)  # the Ack 1, unmatched


async def test_unsolicited_with_ack_is_acknowledged(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    got: list[Message] = []
    before = pair.dispenser.counters.unexpected
    pair.dispenser._on_report = got.append
    report = unsolicited(DISPENSER, CD, FP1, [it(FP1, 0x64), it(FP1, 0x14, 3)], acknowledged=True)
    await pair.dispenser.send(report)
    await until(lambda: bool(pair.reports))
    # The controller's Ack comes back to the dispenser, where nothing waits for it.
    await until(lambda: pair.dispenser.counters.unexpected > before)


async def test_a_node_with_no_application_answers_ms_ack_2(pair: Pair) -> None:
    await pair.dispenser.wait_link(CD, 3)
    with pytest.raises(Refused) as absent:
        await pair.dispenser.read(CD, db.C_DAT, [0x02])
    assert absent.value.code == "application_absent"


async def test_stop_fails_waiting_requests_and_requests_after_stop(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    pair.app.silent = True
    waiting = asyncio.create_task(pair.cd.read(DISPENSER, FP1, [0x14], timeout=5))
    await asyncio.sleep(0.05)
    await pair.cd.stop()
    with pytest.raises(TransportError):
        await waiting
    with pytest.raises(TransportError):
        await pair.cd.read(DISPENSER, FP1, [0x14])


async def test_one_node_per_nozzle_shares_one_link() -> None:
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    nozzles = [Lna(1, 9), Lna(1, 10), Lna(1, 11), Lna(1, 12)]
    apps = {lna: LoopbackDispenser(lna=lna, fp_states={1: 2 + i}) for i, lna in enumerate(nozzles)}

    async def by_recipient(request: Message) -> Sequence[Message]:
        return await apps[request.recipient].on_request(request)

    board = IfsfNode(loopback_settings(nozzles, disp_hb, cd_hb), on_request=by_recipient)
    cd = IfsfNode(loopback_settings([CD], cd_hb, disp_hb))
    async with cd, board:
        for lna in nozzles:
            await cd.wait_link(lna, 3)
        assert len(cd._links) == 1
        states = [(await cd.read(lna, FP1, [0x14])).values()[0x14] for lna in nozzles]
        assert states == [2, 3, 4, 5]


async def test_unknown_recipient_answers_are_sent_once_the_peer_is_heard() -> None:
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    dispenser = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb))
    reports: list[Message] = []
    cd = IfsfNode(loopback_settings([CD], cd_hb, disp_hb), on_report=reports.append)
    async with dispenser:
        # The CD is not running yet: the report waits for its heartbeat.
        await dispenser.send(unsolicited(DISPENSER, CD, FP1, [it(FP1, 0x64), it(FP1, 0x14, 3)]))
        async with cd:
            await until(lambda: bool(reports))
    assert reports[0].originator == DISPENSER


def h(text: str) -> bytes:
    return bytes.fromhex(text)


async def beat(lna: Lna, tcp_port: int, to_port: int) -> None:
    """Heartbeats of a hand-made peer at 127.0.0.1:`tcp_port`, every 50 ms, until cancelled."""
    record = encode_heartbeat(Heartbeat(ipaddress.IPv4Address("127.0.0.1"), tcp_port, lna))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        while True:
            udp.sendto(record, ("127.0.0.1", to_port))
            await asyncio.sleep(0.05)


async def test_garbage_on_the_link_is_a_typed_error_that_does_not_kill_the_node(
    pair: Pair,
) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.cd.tcp_port)
    # Framed by its M_Lg but unreadable (DB_Ad_Lg 9), then a good report: still in step.
    writer.write(h("02 01 01 01 00 80 00 02 09 21"))
    good = unsolicited(DISPENSER, CD, FP1, [it(FP1, 0x64), it(FP1, 0x14, 8)])
    writer.write(encode(good))
    await writer.drain()
    await until(lambda: good in pair.reports)
    assert isinstance(pair.errors[0], FrameError)
    assert pair.cd.counters.malformed == 1
    # An M_Lg no message has: the stream cannot be framed, the node drops that connection.
    writer.write(h("02 01 01 01 00 80 FF FF 00 00"))
    await writer.drain()
    async with asyncio.timeout(3):
        assert await reader.read() == b""
    writer.close()
    assert isinstance(pair.errors[-1], FramingLost)
    # A datagram on the heartbeat port that is no heartbeat.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"hello", ("127.0.0.1", pair.cd.heartbeat_port))
    await until(lambda: len(pair.errors) == 3)
    assert isinstance(pair.errors[-1], FrameError)
    # The node goes on.
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}
    assert pair.cd.is_up(DISPENSER)


async def test_an_unreadable_reply_fails_its_request_with_a_frame_error(pair: Pair) -> None:
    """A raw peer at 1.5: heard by a hand-sent heartbeat, it answers a read with bytes that
    frame but do not read."""
    fake = Lna(1, 5)
    requests: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                requests.put_nowait(data)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    beating = asyncio.create_task(beat(fake, port, pair.cd.heartbeat_port))
    async with server:
        await pair.cd.wait_link(fake, 3)
        _, uplink = await asyncio.open_connection("127.0.0.1", pair.cd.tcp_port)
        reading = asyncio.create_task(pair.cd.read(fake, FP1, [0x14], timeout=5))
        request = decode_message(await asyncio.wait_for(requests.get(), 3))
        token = 0x20 | request.token
        uplink.write(bytes([2, 1, 1, 5, 0, token, 0, 4, 1, 0x21, 0x14, 5]))  # item cut short
        await uplink.drain()
        with pytest.raises(FrameError):
            await asyncio.wait_for(reading, 2)
        uplink.close()
    beating.cancel()


async def test_a_failing_handler_is_answered_ms_ack_2_and_a_failing_callback_is_logged(
    pair: Pair,
) -> None:
    await pair.cd.wait_link(DISPENSER, 3)

    async def broken(request: Message) -> Sequence[Message]:
        raise RuntimeError("bug in the dispenser application")

    def broken_report(message: Message) -> None:
        raise RuntimeError("bug in the controller application")

    pair.dispenser._on_request = broken
    with pytest.raises(Refused) as absent:
        await pair.cd.read(DISPENSER, FP1, [0x14])
    assert absent.value.ms_ack == 2
    pair.dispenser._on_request = pair.app.on_request
    pair.cd._on_report = broken_report
    await pair.cd.command(DISPENSER, FP1, 0x3C)  # acked, then a report the callback fails on
    await asyncio.sleep(0.1)
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 3}


async def test_a_listening_node_hears_peers_and_opens_no_link() -> None:
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    dispenser = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb))
    scanner = IfsfNode(
        loopback_settings([Lna(2, 9)], cd_hb, disp_hb, connect=False, send_heartbeat=False)
    )
    async with scanner, dispenser:
        peer = await scanner.wait_peer(DISPENSER, 3)
        assert peer.port == dispenser.tcp_port
        await asyncio.sleep(0.2)
        assert not scanner.is_up(DISPENSER) and scanner._links == {}
        assert dispenser.peers == {}  # the scanner sent no heartbeat


async def test_a_second_lna_heard_on_an_open_link_gets_its_waiting_messages() -> None:
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    other_cd = Lna(2, 2)
    board = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb))
    first = IfsfNode(loopback_settings([CD], cd_hb, disp_hb))
    async with board, first:
        await board.wait_link(CD, 3)
        reports: list[Message] = []
        # A message for 2.2, not heard yet, waits; 2.2 then appears at 2.1's address.
        await board.send(unsolicited(DISPENSER, other_cd, FP1, [it(FP1, 0x64)]))
        first._on_report = reports.append
        heartbeat = replace(first.heartbeats()[0], lna=other_cd)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(encode_heartbeat(heartbeat), ("127.0.0.1", board.heartbeat_port))
        await until(lambda: bool(reports))
        assert reports[0].recipient == other_cd


async def test_a_node_started_again_keeps_its_ports_and_hears_its_peers_again(
    pair: Pair,
) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    ports = pair.dispenser.tcp_port, pair.dispenser.heartbeat_port
    await pair.dispenser.stop()
    assert pair.dispenser.peers == {}
    await pair.dispenser.start()
    assert (pair.dispenser.tcp_port, pair.dispenser.heartbeat_port) == ports
    await pair.dispenser.wait_link(CD, 3)
    await pair.cd.wait_link(DISPENSER, 3)
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}


async def test_dropped_links_open_again(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    ups = sum(isinstance(e, LinkUp) for e in pair.cd_events)
    await pair.dispenser.drop_links()
    await until(lambda: sum(isinstance(e, LinkUp) for e in pair.cd_events) > ups)
    await pair.dispenser.wait_link(CD, 3)
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}
    assert pair.dispenser.counters.reopens >= 1


async def test_raw_garbage_from_a_peer_is_survived(pair: Pair) -> None:
    await pair.dispenser.wait_link(CD, 3)
    await pair.dispenser.send_raw(CD, h("02 01 01 01 00 C0 00 03 01 21 00"))  # not IFSF
    await until(lambda: len(pair.errors) == 1)
    await pair.dispenser.send_raw(CD, b"\xff" * 12)  # unframeable: the CD drops the link
    await until(lambda: len(pair.errors) == 2)
    assert isinstance(pair.errors[1], FramingLost)
    await until(lambda: pair.dispenser.counters.reopens >= 1)
    await pair.cd.wait_link(DISPENSER, 3)
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}
    with pytest.raises(TransportError):
        await pair.dispenser.send_raw(Lna(2, 7), b"x")


def broadcast_loops_back(port: int) -> bool:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(("0.0.0.0", port))
        rx.settimeout(0.5)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            tx.sendto(b"probe", ("255.255.255.255", port))
            return rx.recv(16) == b"probe"
        except OSError:
            return False


async def test_broadcast_heartbeats_on_one_shared_port() -> None:
    """As on a station: every node on the same heartbeat port, sending to the broadcast
    address, hearing the others and ignoring its own."""
    port = free_udp_port()
    if not broadcast_loops_back(port):
        pytest.skip("this host does not deliver broadcasts back to itself")

    def on_lan(lna: Lna) -> LinkSettings:
        return LinkSettings(
            lnas=(lna,),
            tcp_port=0,
            heartbeat_port=port,
            heartbeat_destinations=(("255.255.255.255", port),),
            **FAST,
        )

    app = LoopbackDispenser()
    async with (
        IfsfNode(on_lan(CD)) as cd,
        IfsfNode(on_lan(DISPENSER), on_request=app.on_request) as dispenser,
    ):
        await cd.wait_link(DISPENSER, 3)
        await dispenser.wait_link(CD, 3)
        assert set(cd.peers) == {DISPENSER} and set(dispenser.peers) == {CD}
        assert cd.advertise_ip != "0.0.0.0"
        assert (await cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}


async def test_an_answer_that_cannot_be_sent_does_not_stop_the_answering(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    link = pair.dispenser._link_of(CD)
    assert link is not None
    real_send = link.send
    failures = [TransportError("the link broke under the answer")]

    async def broken_once(data: bytes, *, queue: bool) -> None:
        if failures:
            raise failures.pop()
        await real_send(data, queue=queue)

    link.send = broken_once  # type: ignore[method-assign]
    with pytest.raises(DeviceTimeout):
        await pair.cd.read(DISPENSER, FP1, [0x14], timeout=0.3)
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    pauses = [0.0]
    for _ in range(8):
        pauses.append(next_backoff(pauses[-1], 0.5, 30.0))
    assert pauses[1:] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert jittered(8.0, 0.0) == 4.0 and jittered(8.0, 0.999) < 8.0


async def test_a_peer_heard_before_its_server_listens_is_reached_once_it_does(
    pair: Pair,
) -> None:
    """The heartbeat names a port nobody listens on yet: the link is tried with backoff and
    opens once a server is there."""
    fake = Lna(1, 6)
    port = free_tcp_port()
    accepted = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        try:
            await reader.read()
        finally:
            writer.close()

    beating = asyncio.create_task(beat(fake, port, pair.cd.heartbeat_port))
    try:
        await pair.cd.wait_peer(fake, 3)
        await until(lambda: any(isinstance(e, LinkDown) and fake in e.lnas for e in pair.cd_events))
        assert not pair.cd.is_up(fake)
        async with await asyncio.start_server(serve, "127.0.0.1", port):
            await pair.cd.wait_link(fake, 3)
            await asyncio.wait_for(accepted.wait(), 3)
            await pair.cd.stop()
    finally:
        beating.cancel()


async def test_a_node_stopped_right_after_its_start_leaves_no_coroutine_unawaited() -> None:
    """Its tasks cancelled before their first step still close their work (no RuntimeWarning
    'coroutine ... was never awaited' when they are collected)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            node = IfsfNode(LinkSettings(lnas=(Lna(2, 1),), tcp_port=0, heartbeat_port=0))
            await node.start()
            await node.stop()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


async def test_a_failing_tap_is_logged_and_the_node_goes_on(pair: Pair) -> None:
    """A sniffer's tap runs in the node's own receive path: its bug must not cost a reply."""
    seen: list[str] = []

    def broken_tap(*_args: object) -> None:
        raise RuntimeError("a tap's own bug")

    pair.cd.taps.append(broken_tap)
    pair.cd.taps.append(lambda direction, wire, found, at: seen.append(direction))
    await pair.cd.wait_link(DISPENSER, 3)
    with structlog.testing.capture_logs() as logs:
        reply = await pair.cd.read(DISPENSER, FP1, [0x14])
    assert isinstance(reply, ReadReply) and reply.values() == {0x14: 2}
    assert "tx" in seen and "rx" in seen  # the tap after the broken one still sees both ways
    assert any(entry["event"] == "bus_tap_failed" for entry in logs)


async def test_a_queued_send_whose_write_fails_is_sent_once_the_link_opens_again(
    pair: Pair,
) -> None:
    """A write that fails under `send` (the peer reset the connection: 'Connection lost'
    from drain) is not the caller's error when the message may be queued: it waits in the
    backlog and goes out on the next connection. Raising instead killed the simulator's
    ticking task in the chaos run, and the dispensers stood still."""
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    link = pair.dispenser._link_of(CD)
    assert link is not None and link.writer is not None
    ups = sum(isinstance(e, LinkUp) for e in pair.disp_events)

    async def lost() -> None:
        raise ConnectionResetError("Connection lost")

    link.writer.drain = lost  # type: ignore[method-assign]
    report = unsolicited(DISPENSER, CD, FP1, [it(FP1, 0x14, 3)])
    await pair.dispenser.send(report)  # no TransportError: queued
    await until(lambda: sum(isinstance(e, LinkUp) for e in pair.disp_events) > ups)
    await until(lambda: bool(pair.reports))
    # A request (not queued) still fails at once with a typed error when its write fails.
    await pair.cd.wait_link(DISPENSER, 3)
    cd_link = pair.cd._link_of(DISPENSER)
    assert cd_link is not None and cd_link.writer is not None
    cd_link.writer.drain = lost  # type: ignore[method-assign]
    with pytest.raises(TransportError, match="send failed: Connection lost"):
        await pair.cd.read(DISPENSER, FP1, [0x14])


async def test_a_header_whose_m_lg_is_never_filled_does_not_swallow_the_link(pair: Pair) -> None:
    """Garbage that happens to read as a header with a plausible M_Lg (here 3,000 bytes)
    made the receiver wait for a message that never comes: every answer after it went into
    that message, and the dispenser looked mute for minutes (the chaos run's stranded IFSF
    pumps). A message left incomplete longer than `partial_timeout_s` means the framing is
    lost: the connection is closed, the peer opens it again, and the link works."""
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    assert pair.cd.settings.partial_timeout_s <= 1.0  # FAST
    ups = sum(isinstance(e, LinkUp) for e in pair.disp_events)
    header = bytes((CD.subnet, CD.node, DISPENSER.subnet, DISPENSER.node, 0, 0x80)) + (
        3000
    ).to_bytes(2, "big")
    await pair.dispenser.send_raw(CD, header + b"\x00" * 10)
    with pytest.raises(DeviceTimeout):  # the answer is taken for the rest of that message
        await pair.cd.read(DISPENSER, FP1, [0x14], timeout=0.3)
    await until(lambda: sum(isinstance(e, LinkUp) for e in pair.disp_events) > ups)
    await pair.dispenser.wait_link(CD, 3)
    assert (await pair.cd.read(DISPENSER, FP1, [0x14])).values() == {0x14: 2}
    lost = [e for e in pair.errors if isinstance(e, FramingLost) and "incomplete" in str(e)]
    assert lost, pair.errors


async def test_a_node_stopped_while_its_peer_is_linked_in_leaves_no_task_behind() -> None:
    """`stop` returns once the tasks serving the peers' links to us are done too. A program
    that ends its loop right after (`edgectl probe --read`) would otherwise have asyncio.run
    cancel them, which on Python 3.11 logs "Exception in callback ... CancelledError" with a
    traceback (asyncio's server callback calls `exception()` on the cancelled task)."""
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    dispenser = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb))
    cd = IfsfNode(loopback_settings([CD], cd_hb, disp_hb))

    def tasks_of(node: IfsfNode) -> list[asyncio.Task[object]]:
        found = []
        for task in asyncio.all_tasks():
            frame = getattr(task.get_coro(), "cr_frame", None)
            if frame is not None and frame.f_locals.get("self") is node:
                found.append(task)
        return found

    async with dispenser:
        await cd.start()
        await cd.wait_link(DISPENSER, 3)
        await until(lambda: bool(cd._inbound))  # the dispenser's link to us is open
        serving = tasks_of(cd)
        assert serving
        await cd.stop()
        assert [t.get_name() for t in serving if not t.done()] == []


# ---------------------------------------------------------------------------------------
# The two one-way links, seen from a raw TCP peer: each side sends only on the link it opened
# ---------------------------------------------------------------------------------------
@dataclass
class RawPeer:
    """A peer of bare sockets: a TCP server of its own (the links the node opens arrive
    here), heartbeats to the node, and one connection it opens to the node's server."""

    lna: Lna
    server: asyncio.Server
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    beating: asyncio.Task[None] | None = None
    own: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @classmethod
    async def start(cls, lna: Lna, node_hb: int) -> RawPeer:
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        accepted = asyncio.Queue()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put((reader, writer))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        peer = cls(lna, server, accepted)
        peer.beating = asyncio.create_task(peer._beat(node_hb))
        return peer

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def _beat(self, node_hb: int) -> None:
        record = encode_heartbeat(
            Heartbeat(ipaddress.IPv4Address("127.0.0.1"), self.port, self.lna)
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            while True:
                udp.sendto(record, ("127.0.0.1", node_hb))
                await asyncio.sleep(0.05)

    async def connect(self, node: IfsfNode) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.own = await asyncio.open_connection("127.0.0.1", node.tcp_port)
        return self.own

    async def close(self) -> None:
        if self.beating is not None:
            self.beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.beating
        if self.own is not None:
            self.own[1].close()
        self.server.close()
        while not self.accepted.empty():
            self.accepted.get_nowait()[1].close()


async def read_message(reader: asyncio.StreamReader, timeout: float = 2.0) -> Message:
    async with asyncio.timeout(timeout):
        header = await reader.readexactly(8)
        body = await reader.readexactly(int.from_bytes(header[6:8], "big"))
    return decode_message(header + body)


async def nothing_comes(reader: asyncio.StreamReader, seconds: float = 0.3) -> bool:
    """Nothing arrives on `reader` for `seconds` (and the connection stays open)."""
    try:
        async with asyncio.timeout(seconds):
            data = await reader.read(1)
    except TimeoutError:
        return True
    return False if data else not reader.at_eof()


@contextlib.asynccontextmanager
async def raw_peer_of(
    node_settings: LinkSettings, peer: Lna, **node: Any
) -> AsyncIterator[tuple[IfsfNode, RawPeer]]:
    raw = await RawPeer.start(peer, node_settings.heartbeat_port)
    ifsf = IfsfNode(node_settings, **node)
    try:
        async with ifsf:
            yield ifsf, raw
    finally:
        await raw.close()


async def test_the_controller_asks_on_its_link_and_hears_on_the_dispensers() -> None:
    """The controller's requests go on the link it opened; the dispenser's answer and its
    unsolicited report come on the link the dispenser opened, and are taken there."""
    reports: list[Message] = []
    settings = loopback_settings([CD], free_udp_port(), free_udp_port())
    async with raw_peer_of(settings, DISPENSER, name="cd", on_report=reports.append) as (
        cd,
        dispenser,
    ):
        theirs_in, theirs_out = await asyncio.wait_for(dispenser.accepted.get(), 3)  # cd's link
        ours_in, ours_out = await dispenser.connect(cd)  # the dispenser's link
        asking = asyncio.create_task(cd.read(DISPENSER, FP1, [0x14]))
        request = await read_message(theirs_in)
        assert (request.recipient, request.body) == (DISPENSER, Read((0x14,)))
        reply = answer(request, [it(FP1, 0x14, 3)])
        ours_out.write(encode(reply))
        await ours_out.drain()
        assert (await asyncio.wait_for(asking, 3)).values() == {0x14: 3}
        report = unsolicited(DISPENSER, CD, FP1, [it(FP1, 0x64), it(FP1, 0x14, 4)])
        ours_out.write(encode(report))
        await ours_out.drain()
        await until(lambda: bool(reports))
        assert reports[0].originator == DISPENSER
        # Nothing from the controller on the link the dispenser opened: not the request,
        # not an ack of the answer or of the report.
        assert await nothing_comes(ours_in)
        assert await nothing_comes(theirs_in)  # and nothing more than the request on its own
        theirs_out.close()


async def test_the_dispenser_answers_and_reports_on_its_link_only() -> None:
    """The mirror: a controller of bare sockets asks on the link it opened; the dispenser
    node answers, and reports, on the link it opened to the controller."""
    app = LoopbackDispenser()
    settings = loopback_settings([DISPENSER], free_udp_port(), free_udp_port())
    async with raw_peer_of(settings, CD, name="dispenser", on_request=app.on_request) as (
        dispenser,
        cd,
    ):
        app.node = dispenser
        theirs_in, theirs_out = await asyncio.wait_for(cd.accepted.get(), 3)  # dispenser's link
        ours_in, ours_out = await cd.connect(dispenser)  # the controller's link
        request = Message(DISPENSER, CD, 5, FP1, Read((0x14,)))
        ours_out.write(encode(request))
        await ours_out.drain()
        reply = await read_message(theirs_in)
        assert (reply.originator, reply.token, reply.body.type) == (
            DISPENSER,
            5,
            MessageType.ANSWER,
        )
        await dispenser.send(unsolicited(DISPENSER, CD, FP1, [it(FP1, 0x64), it(FP1, 0x14, 3)]))
        report = await read_message(theirs_in)
        assert report.body.type is MessageType.UNSOLICITED
        assert await nothing_comes(ours_in)  # neither the answer nor the report came here
        theirs_out.close()
