"""Cloud commands: parse, verify, deduplicate by cmd_id, persist, execute once, answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgectl.cloud import contract
from edgectl.cloud.contract import (
    AckData,
    AuthorizeData,
    CancelData,
    ClearData,
    Command,
    ContractError,
    PricesData,
    ReplayData,
    ResultStatus,
    StopData,
)
from edgectl.cloud.session import IncomingCommand
from edgectl.cloud.signing import SignatureError, verify_command
from edgectl.errors import CommandError
from edgectl.logs import get_logger
from edgectl.station import OrderRequest, Station

# Longer than a command may live (24 h) plus clock skew: a replay of a forgotten cmd_id is
# always refused as expired.
INBOX_RETENTION = timedelta(hours=48)

_CLEAR_TEXT = {
    "ok": "sale cleared",
    "already_cleared": "sale was already cleared",
    "paid_elsewhere": "sale was paid another way",
    "unknown": "no such sale",
}

Outcome = tuple[ResultStatus, str, str, str | None]  # status, code, message, order_id


class CommandHandler:
    """Turns one incoming MQTT message into at most one action and exactly one answer.

    Order of work: parse (schema, station) → signature → inbox (a known cmd_id gets its
    stored result again and nothing acts) → validity window → persist the command → act →
    store the result and queue it for the cloud in one transaction. The session acknowledges
    the MQTT message only after this returns, so a crash before the command is persisted
    means the broker delivers it again.
    """

    def __init__(
        self,
        station: Station,
        *,
        keys: Mapping[str, Ed25519PublicKey],
        clock_skew_s: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.station = station
        self.keys = keys
        self.clock_skew_s = clock_skew_s
        self.now = now
        self.log = get_logger(station=station.config.station.id, part="commands")
        self.handled = 0
        # Told when a replay made sent messages wait again (the publisher rewinds its cursors).
        self.on_replay: Callable[[], None] = lambda: None

    async def handle(self, message: IncomingCommand) -> None:
        received = self.station.clock()  # an order's latency runs from here (metrics)
        try:
            command = contract.parse_command(
                message.payload,
                command_type=message.type,
                station=self.station.config.station.id,
                now=None,  # checked after the inbox: see the class docstring
                clock_skew_s=self.clock_skew_s,
            )
        except ContractError as exc:
            # The topic's type is claimed only for a payload that could be read at all: a
            # result for bytes that are not a JSON object names no type (nor cmd_id).
            readable = _json_object(message.payload)
            result = contract.rejection_data(exc, message.type if readable else "")
            await self._answer(message, result, exc.code)
            return
        log = self.log.bind(cmd_id=command.cmd_id, type=command.type)
        try:
            key_id = verify_command(command.raw, self.keys)
        except SignatureError as exc:
            result = contract.result_data(
                command.cmd_id, command.type, "rejected", exc.code, str(exc)
            )
            await self._answer(message, result, exc.code)
            return
        stored = await self._lookup(command.cmd_id)
        if stored is not None and stored["result"] is not None:
            await self._repeat(message, command, stored)
            return
        try:
            contract.check_time(command, now=self.now(), clock_skew_s=self.clock_skew_s)
        except ContractError as exc:
            await self._answer(message, contract.rejection_data(exc, message.type), exc.code)
            return
        payload = message.payload.decode("utf-8", "replace")
        if stored is None and not isinstance(command.data, AuthorizeData):
            await self.station.record_command(command.cmd_id, command.type, payload)
        # An authorize is persisted in the transaction that creates its order (one commit
        # before the pump); one refused before that is stored with its result below.
        # A command persisted before a restart but never answered is acted on now: every
        # action is idempotent for the same command (an order is not created twice).
        log.info("command_received", key_id=key_id)
        status, code, text, order_id = await self._execute(
            command, payload, resumed=stored is not None, received=received
        )
        result = contract.result_data(command.cmd_id, command.type, status, code, text, order_id)
        await self.station.finish_command(
            command.cmd_id,
            result,
            topic=message.response_topic,
            correlation=message.correlation_data,
            payload=payload,
        )
        self.handled += 1
        log.info("command_done", status=status, code=code)

    async def _lookup(self, cmd_id: str) -> dict[str, Any] | None:
        """The inbox row of a command id, read on the event loop (no store-thread hop)."""
        return await self.station.stored_command(cmd_id)

    async def _answer(self, message: IncomingCommand, result: dict[str, Any], code: str) -> None:
        """Queue a refusal that changes nothing (not stored in the inbox)."""
        self.log.warning(
            "command_rejected",
            code=code,
            cmd_id=result.get("cmd_id"),
            topic=message.topic,
            reason=result.get("message"),
        )
        await self.station.answer_command(
            result,
            topic=message.response_topic,
            correlation=message.correlation_data,
        )

    async def _repeat(
        self, message: IncomingCommand, command: Command, stored: dict[str, Any]
    ) -> None:
        if not _same_command(stored["payload"], command):
            result = contract.result_data(
                command.cmd_id,
                command.type,
                "rejected",
                "duplicate",
                "cmd_id already used for a different command",
            )
            await self._answer(message, result, "duplicate")
            return
        previous: dict[str, Any] = json.loads(stored["result"])
        previous["duplicate"] = True
        self.log.info("command_repeated", cmd_id=command.cmd_id, status=previous.get("status"))
        await self.station.answer_command(
            previous,
            topic=message.response_topic,
            correlation=message.correlation_data,
        )

    async def _execute(
        self, command: Command, payload: str, *, resumed: bool, received: float | None = None
    ) -> Outcome:
        data = command.data
        try:
            if isinstance(data, AuthorizeData):
                return await self._authorize(
                    command, data, payload, resumed=resumed, received=received
                )
            if isinstance(data, CancelData):
                text = await self.station.cancel_order(data.order_id)
                return "accepted", "ok", text, data.order_id
            if isinstance(data, StopData):
                return "accepted", "ok", await self.station.stop_pump(data.pump), None
            if isinstance(data, PricesData):
                if data.currency != self.station.config.station.currency:
                    raise CommandError(
                        f"prices in {data.currency}, the station sells in "
                        f"{self.station.config.station.currency}",
                        code="wrong_currency",
                    )
                await self.station.set_prices(
                    data.price_set_id,
                    {p.grade: p.unit_price for p in data.prices},
                    effective_at=data.effective_at,
                )
                return "accepted", "ok", f"price set {data.price_set_id} accepted", None
            if isinstance(data, AckData):
                return await self._ack(data)
            if isinstance(data, ReplayData):
                return await self._replay(data)
            assert isinstance(data, ClearData)
            outcome = await self.station.clear_sale(order_id=data.order_id, sale_id=data.sale_id)
            status: ResultStatus = "rejected" if outcome == "unknown" else "accepted"
            return status, outcome, _CLEAR_TEXT[outcome], data.order_id
        except CommandError as exc:
            return "rejected", exc.code, str(exc), getattr(data, "order_id", None)

    async def _authorize(
        self,
        command: Command,
        data: AuthorizeData,
        payload: str,
        *,
        resumed: bool,
        received: float | None = None,
    ) -> Outcome:
        if resumed:
            status = await self.station.order_status(data.order_id)
            if status is not None:
                # Persisted before a restart: the pump's task reconciles it with the pump.
                text = f"order {data.order_id} is {status}"
                return "accepted", "ok", text, data.order_id
        await self._settle_pump(command, data)
        request = OrderRequest(
            order_id=data.order_id,
            cmd_id=command.cmd_id,
            pump=data.pump,
            preset_type=data.preset_type,
            preset_value=data.preset_value,
            currency=data.currency,
            nozzles=data.nozzles,
            grades=data.grades,
            payment_method=data.payment_method,
            expires_at=contract.timestamp(data.expires_at) if data.expires_at else None,
            command_payload=payload,
            received_at=received,
        )
        await self.station.start_order(request)
        unit = "L" if data.preset_type == "volume" else data.currency
        text = f"pump {data.pump} authorized for {data.preset_value} {unit}"
        return "accepted", "ok", text, data.order_id

    async def _ack(self, data: AckData) -> Outcome:
        done = await self.station.acknowledge(data.stream, data.seq)
        if done["ahead"]:
            return (
                "rejected",
                "beyond_stream",
                f"{data.stream} has reached seq {done['last_seq']}, not {data.seq}: the backend"
                " counts a store this station does not have (a rebuilt one starts again at 1)",
                None,
            )
        text = (
            f"{data.stream} acknowledged up to {done['acked_seq']} of {done['last_seq']},"
            f" {done['removed']} message(s) released"
        )
        return "accepted", "ok", text, None

    async def _replay(self, data: ReplayData) -> Outcome:
        done = await self.station.replay(data.stream, data.from_seq, data.to_seq)
        top, asked, held = done["last_seq"], done["asked"], done["held"]
        if data.from_seq > top:
            return (
                "rejected",
                "beyond_stream",
                f"{data.stream} has reached seq {top}, the replay starts at {data.from_seq}",
                None,
            )
        last = min(data.to_seq, top)
        if held:
            self.on_replay()
        if held == asked:
            return "accepted", "ok", f"re-sending {data.stream} {data.from_seq}..{last}", None
        if held:
            text = (
                f"re-sending the {held} of {data.stream} {data.from_seq}..{last} still held;"
                f" {asked - held} acknowledged already or given up over the disk quota"
            )
            return "accepted", "partial", text, None
        text = (
            f"no message of {data.stream} {data.from_seq}..{last} is held any more"
            " (acknowledged already, or given up over the disk quota)"
        )
        return "rejected", "unknown", text, None

    async def _settle_pump(self, command: Command, data: AuthorizeData) -> None:
        """Give the pump the moment it needs before the order is judged (the station starting,
        the last sale's reset), but never past the command's or the order's own expiry: one
        that passes meanwhile is `expired`."""
        deadline = command.expires_at
        if data.expires_at is not None:
            deadline = min(deadline, data.expires_at)
        left = (deadline - self.now()).total_seconds() + self.clock_skew_s
        await self.station.settle_pump(data.pump, self.station.clock() + left)
        try:
            contract.check_time(command, now=self.now(), clock_skew_s=self.clock_skew_s)
        except ContractError as exc:
            raise CommandError(str(exc), code=exc.code) from exc

    async def purge(self) -> int:
        """Forget answered commands past the retention window."""
        before = contract.timestamp(self.now() - INBOX_RETENTION)
        return await self.station.forget_commands(before)


def _json_object(payload: bytes) -> bool:
    """Whether a refused payload was at least a JSON object (its fields could be read)."""
    try:
        return isinstance(json.loads(payload), dict)
    except (ValueError, RecursionError):
        return False


def _same_command(stored_payload: str, command: Command) -> bool:
    """Whether a stored command is the one received again (same schema and same data)."""
    try:
        stored = json.loads(stored_payload)
    except ValueError:
        return True
    if not isinstance(stored, dict) or not stored:
        return True  # only the result was kept (a refusal): nothing to compare
    return bool(
        stored.get("schema") == command.raw.get("schema")
        and stored.get("data") == command.raw.get("data")
    )
