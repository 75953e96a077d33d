"""Cloud commands: parse, verify, deduplicate by cmd_id, persist, execute once, answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgectl.cloud import contract
from edgectl.cloud.contract import (
    AuthorizeData,
    CancelData,
    ClearData,
    Command,
    ContractError,
    PricesData,
    StopData,
)
from edgectl.cloud.session import IncomingCommand
from edgectl.cloud.signing import SignatureError, verify_command
from edgectl.errors import CommandError
from edgectl.logs import get_logger
from edgectl.station import OrderRequest, Station

P = ParamSpec("P")
T = TypeVar("T")

INBOX_RETENTION = timedelta(hours=48)  # longer than the longest command validity (24 h)


class CommandHandler:
    """Turns one incoming MQTT message into at most one action and exactly one stored result.

    Order of work: parse (schema, station, expiry) → signature → inbox lookup (a known
    cmd_id gets its stored result again, nothing acts) → persist the command → act → store
    the result and queue it for the cloud in one transaction.
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
        self.store = station.store
        self.keys = keys
        self.clock_skew_s = clock_skew_s
        self.now = now
        self.log = get_logger(station=station.config.station.id, part="commands")
        self.handled = 0

    async def _db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.station.db(fn, *args, **kwargs)

    async def handle(self, message: IncomingCommand) -> None:
        reply = _Reply(message)
        try:
            command = contract.parse_command(
                message.payload,
                command_type=message.type,
                station=self.station.config.station.id,
                now=self.now(),
                clock_skew_s=self.clock_skew_s,
            )
        except ContractError as exc:
            self.log.warning(
                "command_rejected",
                code=exc.code,
                reason=str(exc),
                cmd_id=exc.cmd_id,
                topic=message.topic,
            )
            result = contract.result_data(
                cmd_id=exc.cmd_id or "",
                type=message.type,
                status="rejected",
                code=exc.code,
                message=str(exc),
            )
            await self._db(
                self.store.queue_result, result, topic=reply.topic, correlation=reply.correlation
            )
            return
        log = self.log.bind(cmd_id=command.cmd_id, type=command.type)
        try:
            key_id = verify_command(command.raw, self.keys)
        except SignatureError as exc:
            log.warning("command_rejected", code=exc.code, reason=str(exc))
            result = contract.result_data(
                cmd_id=command.cmd_id,
                type=command.type,
                status="rejected",
                code=exc.code,
                message=str(exc),
            )
            await self._db(
                self.store.queue_result, result, topic=reply.topic, correlation=reply.correlation
            )
            return
        stored = await self._db(self.store.command_result, command.cmd_id)
        if stored is not None and stored["result"] is not None:
            previous: dict[str, Any] = json.loads(stored["result"])
            previous["duplicate"] = True
            log.info("command_repeated", status=previous.get("status"))
            await self._db(
                self.store.queue_result, previous, topic=reply.topic, correlation=reply.correlation
            )
            return
        if stored is None:
            await self._db(
                self.store.receive_command,
                command.cmd_id,
                command.type,
                message.payload.decode("utf-8", "replace"),
            )
        # else: received before a restart but never answered: act now (idempotent below).
        log.info("command_received", key_id=key_id)
        status, code, text, order_id = await self._execute(command, resumed=stored is not None)
        result = contract.result_data(
            cmd_id=command.cmd_id,
            type=command.type,
            status=status,
            code=code,
            message=text,
            order_id=order_id,
        )
        await self._db(
            self.store.finish_command,
            command.cmd_id,
            result,
            topic=reply.topic,
            correlation=reply.correlation,
        )
        self.handled += 1
        log.info("command_done", status=status, code=code)

    async def _execute(
        self, command: Command, *, resumed: bool
    ) -> tuple[str, str, str, str | None]:
        data = command.data
        try:
            if isinstance(data, AuthorizeData):
                return await self._authorize(command, data, resumed=resumed)
            if isinstance(data, CancelData):
                text = await self.station.cancel_order(data.order_id)
                return "accepted", "ok", text, data.order_id
            if isinstance(data, StopData):
                return "accepted", "ok", await self.station.stop_pump(data.pump), None
            if isinstance(data, PricesData):
                await self.station.set_prices(
                    data.price_set_id,
                    {p.grade: p.unit_price for p in data.prices},
                    effective_at=data.effective_at,
                )
                return "accepted", "ok", f"price set {data.price_set_id} accepted", None
            if isinstance(data, ClearData):
                outcome = await self._db(
                    self.store.clear_sale, order_id=data.order_id, sale_id=data.sale_id
                )
                status = "rejected" if outcome == "unknown" else "accepted"
                return status, outcome, _CLEAR_TEXT[outcome], data.order_id
        except CommandError as exc:
            order_id = getattr(data, "order_id", None)
            return "rejected", exc.code, str(exc), order_id
        return "rejected", "invalid", f"unsupported command {command.type}", None

    async def _authorize(
        self, command: Command, data: AuthorizeData, *, resumed: bool
    ) -> tuple[str, str, str, str | None]:
        if resumed:
            order = await self._db(self.store.order, data.order_id)
            if order is not None:
                # Persisted before the restart: the pump's task reconciles it with the pump.
                return (
                    "accepted",
                    "ok",
                    f"order {data.order_id} is {order['status']}",
                    (data.order_id),
                )
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
            expires_at=_iso(data.expires_at) if data.expires_at else None,
        )
        await self.station.start_order(request)
        return (
            "accepted",
            "ok",
            f"pump {data.pump} authorized for {data.preset_value} "
            f"{'L' if data.preset_type == 'volume' else data.currency}",
            data.order_id,
        )

    async def purge(self) -> int:
        """Forget answered commands past the retention window (a replay is expired by then)."""
        before = _iso(self.now() - INBOX_RETENTION)
        return await self._db(self.store.purge_inbox, before)


class _Reply:
    """Where a command's result goes: its MQTT 5 response topic, else the station's result topic."""

    def __init__(self, message: IncomingCommand) -> None:
        self.topic = message.response_topic
        self.correlation = message.correlation_data


_CLEAR_TEXT = {
    "ok": "sale cleared",
    "already_cleared": "sale was already cleared",
    "paid_elsewhere": "sale was paid another way",
    "unknown": "no such sale",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Handler = Callable[[IncomingCommand], Awaitable[None]]
