"""The one boundary where the drivers' errors (drivers.base.DriverError and its branches)
become edgectl's (edgectl.errors): the station's pumps talk to their line through
`TranslatedLine`, and the few other places that call a driver do it under `translated()`.
Nothing else in edgectl names a driver's exception (tests/test_architecture.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from decimal import Decimal

from drivers.base import (
    CommandRejected,
    DeviceTimeout,
    DispenserLine,
    DispenserStatus,
    DriverError,
    FillingInfo,
    FrameError,
    TransportError,
)
from edgectl.errors import (
    DeviceRefusedError,
    DeviceTimeoutError,
    DriverIOError,
    FrameDecodeError,
    LineUnavailableError,
)

_BRANCHES: tuple[tuple[type[DriverError], type[DriverIOError]], ...] = (
    (TransportError, LineUnavailableError),
    (DeviceTimeout, DeviceTimeoutError),
    (FrameError, FrameDecodeError),
    (CommandRejected, DeviceRefusedError),
)


def translate(exc: DriverError) -> DriverIOError:
    """edgectl's error for a driver's: the branch that says what failed, the same words
    (device first, as the driver says it), the driver's own `code` and `device`."""
    kind = next((ours for theirs, ours in _BRANCHES if isinstance(exc, theirs)), DriverIOError)
    error = kind(str(exc), device=exc.device, code=exc.code)
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Run driver calls; a driver's error leaves as edgectl's."""
    try:
        yield
    except DriverError as exc:
        raise translate(exc) from exc


class TranslatedLine:
    """A dispenser line whose commands raise edgectl's errors; what is not a command (its
    name, `is_online`, counters…) is the line's own."""

    def __init__(self, line: DispenserLine) -> None:
        self.wrapped = line

    def __getattr__(self, name: str) -> object:
        return getattr(self.wrapped, name)

    @property
    def name(self) -> str:
        return self.wrapped.name

    async def run(self) -> None:
        await self.wrapped.run()

    def is_online(self, address: int) -> bool:
        return self.wrapped.is_online(address)

    async def request_status(self, address: int) -> DispenserStatus:
        with translated():
            return await self.wrapped.request_status(address)

    async def reset(self, address: int) -> DispenserStatus:
        with translated():
            return await self.wrapped.reset(address)

    async def authorize(
        self,
        address: int,
        *,
        nozzles: Sequence[int] = (),
        preset_volume: Decimal | None = None,
        preset_amount: Decimal | None = None,
    ) -> None:
        with translated():
            await self.wrapped.authorize(
                address, nozzles=nozzles, preset_volume=preset_volume, preset_amount=preset_amount
            )

    async def stop(self, address: int) -> None:
        with translated():
            await self.wrapped.stop(address)

    async def suspend(self, address: int) -> None:
        with translated():
            await self.wrapped.suspend(address)

    async def resume(self, address: int) -> None:
        with translated():
            await self.wrapped.resume(address)

    async def set_prices(self, address: int, prices: Sequence[Decimal]) -> None:
        with translated():
            await self.wrapped.set_prices(address, prices)

    async def filling_info(self, address: int) -> FillingInfo:
        with translated():
            return await self.wrapped.filling_info(address)

    async def totals(self, address: int, nozzle: int) -> tuple[Decimal, Decimal]:
        with translated():
            return await self.wrapped.totals(address, nozzle)
