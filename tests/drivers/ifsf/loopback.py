"""A small IFSF dispenser peer on loopback, built on the node layer and the codec, for the
link and start-up tests (the full simulator is drivers/ifsf/sim.py's job).

It answers reads of FP, TR, C_DAT and COM_SV data from plain dicts, moves FP states on
Open_FP, accepts configuration only while its FPs are Closed, and can be told to stay silent,
to be busy or to refuse (MS_ACK 5 with data acks).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from drivers.ifsf import databases as db
from drivers.ifsf.codec import DataAck, DataItem, Message, Read, Write
from drivers.ifsf.codec import item as it
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import IfsfNode, LinkSettings
from drivers.ifsf.node import ack, answer, unsolicited

CD = Lna(2, 1)
DISPENSER = Lna(1, 1)
FAST = {
    "heartbeat_interval_s": 0.1,
    "missed_heartbeats": 10,
    "reply_timeout_s": 1.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.2,
    "connect_timeout_s": 0.5,
    "partial_timeout_s": 0.5,
}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_settings(lnas: Sequence[Lna], own_hb: int, peer_hb: int, **extra: Any) -> LinkSettings:
    return LinkSettings(
        lnas=tuple(lnas),
        tcp_host="127.0.0.1",
        tcp_port=extra.pop("tcp_port", 0),
        heartbeat_host="127.0.0.1",
        heartbeat_port=own_hb,
        heartbeat_destinations=(("127.0.0.1", peer_hb),),
        **{**FAST, **extra},
    )


@dataclass
class Sale:
    seq: int
    state: int  # 2 Payable, 3 Locked
    amount: Decimal
    volume: Decimal
    price: Decimal
    nozzle: int = 1


@dataclass
class LoopbackDispenser:
    """The application of a dispenser node: its databases and how it answers."""

    lna: Lna = DISPENSER
    fp_states: dict[int, int] = field(default_factory=lambda: {1: 2})
    sales: dict[int, list[Sale]] = field(default_factory=dict)
    calculator: dict[int, Any] = field(default_factory=lambda: {0x02: 2, 0x03: 1, 0x05: 1})
    recipients: list[Any] = field(default_factory=list)
    offline: list[dict[int, Any]] = field(default_factory=list)  # by data id, as CA-CD
    written: list[Message] = field(default_factory=list)
    silent: bool = False
    busy: bool = False
    refuse_com_sv: int | None = None  # MS_ACK to COM_SV writes (None: accept them)
    node: IfsfNode | None = None

    def _fp_items(self, fp: int, data_ids: Sequence[int]) -> list[DataItem]:
        address = db.FuellingPoint(fp)
        values: dict[int, Any] = {0x14: self.fp_states[fp], 0x15: 0, 0x04: 1, 0x02: 2}
        return [it(address, d, values[d]) for d in data_ids if d in values]

    def _sale_items(self, fp: int, sale: Sale, data_ids: Sequence[int]) -> list[DataItem]:
        address = db.TransactionBuffer(fp, sale.seq)
        values: dict[int, Any] = {
            0x01: sale.seq,
            0x05: sale.amount,
            0x06: sale.volume,
            0x07: sale.price,
            0x08: sale.nozzle,
            0x15: sale.state,
        }
        return [it(address, d, values[d]) for d in data_ids if d in values]

    async def on_request(self, request: Message) -> Sequence[Message]:
        if self.silent:
            return []
        if self.busy:
            return [ack(request, 7)]
        address, body = request.database, request.body
        if isinstance(body, Read):
            return self._read(request, address, body)
        assert isinstance(body, Write)
        self.written.append(request)
        return self._write(request, address, body)

    def _read(self, request: Message, address: db.Address, body: Read) -> list[Message]:
        ids = body.data_ids
        match address:
            case db.FuellingPoint(fp=0):
                out = [
                    answer(request, self._fp_items(fp, ids), database=db.FuellingPoint(fp))
                    for fp in sorted(self.fp_states)
                ]
                return [*out, ack(request, 0)]
            case db.FuellingPoint(fp=fp) if fp in self.fp_states:
                return [answer(request, self._fp_items(fp, ids))]
            case db.TransactionBuffer(fp=0, seq=0, every=False):
                # Offline sales (20 21 0000), closed the ZSY way: an Ack on 21 20 0000.
                offline = [
                    answer(request, [it(address, d, v) for d, v in sale.items()])
                    for sale in self.offline
                ]
                closing = db.TransactionBuffer(1, 0, every=True)
                return [*offline, ack(request, 0, database=closing)]
            case db.TransactionBuffer(fp=fp, every=True):
                out = [
                    answer(
                        request,
                        self._sale_items(fp, sale, ids),
                        database=db.TransactionBuffer(fp, sale.seq),
                    )
                    for sale in self.sales.get(fp, [])
                    if sale.state in (2, 3)
                ]
                return [*out, ack(request, 0)]
            case db.CDat():
                return [
                    answer(
                        request,
                        [it(address, d, self.calculator[d]) for d in ids if d in self.calculator],
                    )
                ]
            case db.ComSv():
                return [answer(request, [it(address, 0x04, 10)])]
        return [ack(request, 6)]

    def _write(self, request: Message, address: db.Address, body: Write) -> list[Message]:
        match address:
            case db.ComSv() if self.refuse_com_sv is not None:
                return [ack(request, self.refuse_com_sv)]
            case db.ComSv():
                for data in body.items:
                    if data.data_id == 0x0B:
                        self.recipients.append(db.decode_value(address, 0x0B, data.data))
                return [ack(request, 0)]
            case db.FuellingPoint(fp=fp) if fp in self.fp_states:
                acks = []
                for data in body.items:
                    code = 0
                    if data.data_id == 0x3C:  # Open_FP: only when Closed
                        if self.fp_states[fp] == 2:
                            self.fp_states[fp] = 3
                        else:
                            code = 3
                    elif data.data_id in (0x02, 0x04, 0x07) and self.fp_states[fp] > 2:
                        code = 2
                    acks.append(DataAck(data.data_id, code))
                if any(pair.code for pair in acks):
                    return [ack(request, 5, acks)]
                report = unsolicited(
                    self.lna,
                    request.originator,
                    address,
                    [it(address, 0x64), it(address, 0x14, self.fp_states[fp])],
                )
                return [ack(request, 0), report]
            case db.LogicalNozzle(fp=fp) if self.fp_states.get(fp, 3) > 2:
                return [ack(request, 5, [DataAck(d.data_id, 2) for d in body.items])]
            case db.Product() | db.ProductPerMode() | db.LogicalNozzle() | db.CDat():
                return [ack(request, 0)]
        return [ack(request, 6)]


@contextlib.asynccontextmanager
async def controller_and_dispenser(
    app: LoopbackDispenser, **cd_settings: Any
) -> AsyncIterator[tuple[IfsfNode, IfsfNode]]:
    """A controller node (2.1) and the dispenser node of `app`, both running, linked."""
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    cd = IfsfNode(loopback_settings([CD], cd_hb, disp_hb, **cd_settings), name="cd")
    dispenser = IfsfNode(
        loopback_settings([app.lna], disp_hb, cd_hb), name="dispenser", on_request=app.on_request
    )
    app.node = dispenser
    async with cd, dispenser:
        await cd.wait_link(app.lna, 5)
        yield cd, dispenser
