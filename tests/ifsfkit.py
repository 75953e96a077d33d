"""Test kit: an IFSF dispenser simulator in a process of its own, and a station config with
an IFSF line to it (`protocol = "ifsf"`, for the real `edgectl run`), for the black-box tests
(tests/test_recovery_ifsf.py).

`python -m tests.ifsfkit sim SPEC.json` runs one dispenser node (drivers/ifsf/sim.py) on
loopback with the simulator's control socket, plus three test verbs the control language
does not have:

- `journal`: the writes the node was sent so far, one `db:data-ids` word each (`fp1:3e` is a
  Release_FP, `tr1.0001:1e` a Clear_Transaction), and for each Clear the number of sales
  the daemon's store held when it arrived (`clear@N`), read from the store there and then;
- `hold-clear on|off`: refuse Clear_Transaction with MS_ACK 7 (busy), everything else as
  usual: the sale stays in the buffer after the daemon committed it;
- `hold-totals on|off`: answer every read of a logical nozzle (its totals) with MS_ACK 7:
  the daemon records a sale without its totals;
- `pos-release PUMP [volume V]`: another controller (LNA 2.2, a POS) releases the FP, as
  happens while edgectl is down.

The simulator outlives any daemon: SIGKILL the daemon and the dispenser goes on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from drivers.ifsf import databases as db
from drivers.ifsf.codec import Message, Write
from drivers.ifsf.codec import item as it
from drivers.ifsf.dispenser import DispenserSpec, FpSpec, NozzleSpec, ProductSpec
from drivers.ifsf.encodings import Lna
from drivers.wayne_dart.sim_control import ControlSocket, Reply
from tests.drivers.ifsf.loopback import free_tcp_port, free_udp_port, loopback_settings

CD = Lna(2, 1)
POS = Lna(2, 2)
NODE = Lna(1, 3)
RELEASE_FP, CLEAR_TRANSACTION = 0x3E, 0x1E
PRESET_VOLUME, RELEASE_CONTR_ID = 0x1C, 0x1E
# Products as the station's grades: Prod_Nb 95 at 1.500, 10 (diesel) at 1.800.
PRODUCTS = {1: (95, Decimal("1.500")), 2: (10, Decimal("1.800"))}  # by logical nozzle


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one run: the node's and the controller's TCP servers, their
    UDP heartbeat ports."""

    tcp: int
    sim_hb: int
    cd_hb: int
    cd_tcp: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_tcp_port(), free_udp_port(), free_udp_port(), free_tcp_port())


# ------------------------------------------------------------------ the station side
def station_toml(
    tmp: Path, ports: Ports, cloud: str, *, mode: str = "cloud", pumps: int = 1
) -> str:
    """A station of `pumps` IFSF fuelling points on loopback (pump n is FP n of node 1.3),
    nozzle 1 the 95, nozzle 2 the diesel."""
    parts = [
        f"""
[station]
id = "IFSF-01"
currency = "CNY"

[store]
path = "{tmp / "edgectl.db"}"

[authorization]
mode = "{mode}"
auto_preset_amount = "15.00"
authorize_timeout_s = 60

[logging]
level = "debug"
format = "json"
{cloud}
[[grades]]
id = "95"
name = "95"
unit_price = "1.500"

[[grades]]
id = "diesel"
name = "diesel"
unit_price = "1.800"

[[lines]]
name = "ifsf1"
protocol = "ifsf"
controller_lna = "{CD}"
tcp_port = {ports.cd_tcp}
heartbeat_port = {ports.cd_hb}
heartbeat_to = ["127.0.0.1:{ports.sim_hb}"]
heartbeat_interval_s = 0.2
products = {{ "95" = {PRODUCTS[1][0]}, "diesel" = {PRODUCTS[2][0]} }}
"""
    ]
    for n in range(1, pumps + 1):
        parts.append(
            f'[[pumps]]\nnumber = {n}\nline = "ifsf1"\nnode = "{NODE}"\nfp = {n}\n'
            'nozzles = { 1 = "95", 2 = "diesel" }\n'
        )
    return "\n".join(parts)


# ------------------------------------------------------------------ the dispenser side
def node_spec(fps: int, flow_rate_lps: Decimal, unpaid_limit: int) -> DispenserSpec:
    nozzles = tuple(
        NozzleSpec(n, Decimal("1000.00") * n, Decimal("1500.00") * n) for n in sorted(PRODUCTS)
    )
    return DispenserSpec(
        NODE,
        tuple(FpSpec(nozzles) for _ in range(fps)),
        tuple(ProductSpec(p, f"product {p}", {1: price}) for p, price in PRODUCTS.values()),
        flow_rate_lps=flow_rate_lps,
        unpaid_limit=unpaid_limit,
    )


def one_node_simulator(
    config: Any,
    pump: int,
    sim_hb: int,
    cd_hb: int,
    totals: Mapping[int, tuple[Decimal, Decimal]] | None = None,
) -> Any:
    """Dispenser node 1 with FP 1 for the config's `pump` (its prices and products), as
    `edgectl demo` makes it, heartbeating to `cd_hb` from `sim_hb` every 0.2 s."""
    from drivers import registry
    from drivers.ifsf.sim import IfsfSimulator

    spec = config.pump(pump)
    prices = {n: config.grade(g).unit_price for n, g in spec.nozzles.items()}
    products = config.line(spec.line).products
    plan = registry.NetworkPlan(
        name="forecourt",
        nodes=(
            registry.NodePlan(
                node=1,
                pumps=(
                    registry.PumpPlan(number=pump, address=1, prices=prices, totals=totals or {}),
                ),
                products={(1, n): products[g] for n, g in spec.nozzles.items()},
            ),
        ),
        heartbeat_port=sim_hb,
        heartbeat_destinations=(("127.0.0.1", cd_hb),),
        heartbeat_interval_s=0.2,
    )
    network = registry.dispenser_simulation("ifsf").network
    assert network is not None
    sim = network(plan)
    assert isinstance(sim, IfsfSimulator)
    return sim


@dataclass
class Journal:
    """What the node was asked to write, and the store's sales at each Clear."""

    store: Path
    hold_clear: bool = False
    hold_totals: bool = False
    words: list[str] = field(default_factory=list)

    def sales_in_store(self) -> int:
        if not self.store.exists():
            return -1
        conn = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM sales").fetchone()[0])
        except sqlite3.OperationalError:
            return -1
        finally:
            conn.close()

    def note(self, request: Message) -> bool:
        """Journal a write; True: refuse it (a Clear while held)."""
        body = request.body
        if not isinstance(body, Write):
            return False
        address = request.database
        if isinstance(address, db.TransactionBuffer):
            where = f"tr{address.fp}.{address.seq:04d}"
        elif isinstance(address, db.FuellingPoint):
            where = f"fp{address.fp}"
        else:
            where = type(address).__name__.lower()
        ids = ",".join(f"{d.data_id:02x}" for d in body.items)
        self.words.append(f"{where}:{ids}")
        if isinstance(address, db.TransactionBuffer) and any(
            d.data_id == CLEAR_TRANSACTION for d in body.items
        ):
            self.words.append(f"clear@{self.sales_in_store()}")
            return self.hold_clear
        return False


async def run_sim(spec: Mapping[str, Any]) -> None:
    from drivers.ifsf.node import ack
    from drivers.ifsf.sim import IfsfController, IfsfSimulator

    ports = Ports(**spec["ports"])
    settings = loopback_settings([NODE], ports.sim_hb, ports.cd_hb, tcp_port=ports.tcp)
    sim = IfsfSimulator(
        [node_spec(spec["fps"], Decimal(spec["flow_rate_lps"]), spec["unpaid_limit"])],
        [settings],
        heartbeat_interval_s=0.1,
        tick_s=0.02,
    )
    node = sim.nodes[0]
    journal = Journal(Path(spec["store"]))
    answer = node._on_request

    async def on_request(request: Message) -> Sequence[Message]:
        if journal.note(request):
            return [ack(request, 7)]
        if journal.hold_totals and isinstance(request.database, db.LogicalNozzle):
            return [ack(request, 7)]
        return await answer(request)

    node._on_request = on_request  # type: ignore[method-assign]
    controller = IfsfController(sim)

    async def pos_release(words: list[str]) -> str:
        fp = int(words[1])
        address = db.FuellingPoint(fp)
        items = [it(address, RELEASE_CONTR_ID, POS), it(address, RELEASE_FP)]
        if len(words) == 4 and words[2] == "volume":
            items.insert(0, it(address, PRESET_VOLUME, Decimal(words[3])))
        request = Message(NODE, POS, 0, address, Write(tuple(items)))
        replies = node.model.receive(request, sim.clock())
        await node.send([r for r in replies if r.recipient != POS])
        sim._notify()
        return f"pos-released fp={fp} state={node.model.fps[fp].state.name.lower()}"

    class Control:
        async def handle(self, text: str) -> Reply | None:
            words = text.split()
            if words and words[0] == "journal":
                return Reply("ok " + " ".join(journal.words), ok=True)
            if words and words[0] == "hold-clear":
                journal.hold_clear = words[1:] == ["on"]
                return Reply(f"ok hold-clear={journal.hold_clear}", ok=True)
            if words and words[0] == "hold-totals":
                journal.hold_totals = words[1:] == ["on"]
                return Reply(f"ok hold-totals={journal.hold_totals}", ok=True)
            if words and words[0] == "pos-release":
                return Reply("ok " + await pos_release(words), ok=True)
            return await controller.handle(text)

    socket = ControlSocket(Control(), Path(spec["control"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with sim:
        await socket.start()
        await asyncio.to_thread(Path(spec["ready"]).write_text, "ready\n")
        await stop.wait()
        await socket.close()
        controller.close()


class SimProcess:
    """The simulator above as a child process, and a client of its control socket."""

    def __init__(
        self,
        tmp: Path,
        ports: Ports,
        *,
        fps: int = 1,
        flow_rate_lps: str = "1.0",
        unpaid_limit: int = 2,
    ) -> None:
        self.control = tmp / "ifsf-sim.sock"
        self.ready = tmp / "ifsf-sim.ready"
        self.log = tmp / "ifsf-sim.log"
        self.spec = tmp / "ifsf-sim.json"
        self.spec.write_text(
            json.dumps(
                {
                    "ports": ports.__dict__,
                    "fps": fps,
                    "flow_rate_lps": flow_rate_lps,
                    "unpaid_limit": unpaid_limit,
                    "store": str(tmp / "edgectl.db"),
                    "control": str(self.control),
                    "ready": str(self.ready),
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.ifsfkit", "sim", str(self.spec)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the IFSF simulator did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    async def say(self, command: str, timeout: float = 60) -> str:
        """One command on a connection of its own; its reply (raises on an error reply)."""
        reader, writer = await asyncio.open_unix_connection(str(self.control))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            line = (await asyncio.wait_for(reader.readline(), timeout)).decode().strip()
        finally:
            writer.close()
        if not line.startswith("ok"):
            raise AssertionError(f"simulator: {command!r} -> {line!r}")
        return line

    async def status(self, pump: int = 1) -> dict[str, str]:
        """`status PUMP` as its key=value words."""
        reply = await self.say(f"status {pump}")
        return dict(w.split("=", 1) for w in reply.split() if "=" in w)

    async def journal(self) -> list[str]:
        return (await self.say("journal")).split()[1:]

    async def releases(self) -> int:
        return sum(
            1
            for w in await self.journal()
            if w.startswith("fp") and f"{RELEASE_FP:02x}" in w.split(":")[1].split(",")
        )

    async def until(
        self,
        check: Callable[[dict[str, str]], bool],
        pump: int = 1,
        timeout: float = 20,
        what: str = "",
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(pump)
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}: {status}")
            await asyncio.sleep(0.05)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["sim"]:
        asyncio.run(run_sim(json.loads(Path(argv[1]).read_text())))
        return 0
    print("usage: python -m tests.ifsfkit sim SPEC.json")
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
