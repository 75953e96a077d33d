"""The daemon's housekeeping: scheduled backups of the store and the daily retention of old rows."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from edgectl.config import Config
from edgectl.errors import StoreError
from edgectl.logs import get_logger
from edgectl.station import Station
from edgectl.store.backups import Backup, BackupError, list_backups, make_backup

RETRY_S = 15 * 60.0  # a failed backup is tried again this soon, not at the next interval
RETENTION_EVERY_S = 24 * 3600.0
FIRST_RETENTION_S = 5 * 60.0  # after start: not in the middle of the start-up work
FIRST_BACKUP_S = 120.0  # nor a backup: pumps first (or half the interval, if shorter)


class Maintenance:
    """Backups every `[store] backup_interval_h` (the first one as soon as the newest backup
    is older than that, so restarts neither skip nor repeat one) and retention once a day.
    A failure is one `backup_failed` alarm with its reason, cleared by the next good backup.
    """

    def __init__(
        self,
        config: Config,
        station: Station,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.station = station
        self._now = now
        self.log = get_logger(station=config.station.id, part="maintenance")
        self.last_backup: Backup | None = None
        self.last_error: str | None = None
        ours = [b for b in list_backups(config.store.backups) if b.station == config.station.id]
        if ours:
            self.last_backup = ours[-1]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.config.store.backup_interval_h > 0:
                tg.create_task(self._backups(), name="backups")
            if self.config.store.keep_days > 0:
                tg.create_task(self._retention(), name="retention")

    # ------------------------------------------------------------------ backups
    def next_backup_in(self) -> float:
        """Seconds until the next backup is due (0: now)."""
        interval = self.config.store.backup_interval_h * 3600
        if self.last_backup is None:
            return 0.0
        age = (self._now() - self.last_backup.taken_at).total_seconds()
        return max(0.0, interval - age)

    async def _backups(self) -> None:
        interval = self.config.store.backup_interval_h * 3600
        await asyncio.sleep(max(self.next_backup_in(), min(FIRST_BACKUP_S, interval / 2)))
        while True:
            await asyncio.sleep(self.next_backup_in())
            ok = await self.backup_now()
            if not ok:
                await asyncio.sleep(RETRY_S * random.uniform(0.9, 1.1))

    async def backup_now(self) -> bool:
        """Take one backup; alarm on failure, clear the alarm on success. True if taken."""
        store = self.config.store
        station = self.station
        try:
            backup = await asyncio.to_thread(
                make_backup,
                store.path,
                store.backups,
                self.config.station.id,
                self._now(),
                store.backup_keep,
            )
        except BackupError as exc:
            if self.last_error != str(exc):
                self.log.error("backup_failed", error=str(exc), code=exc.code)
            self.last_error = str(exc)
            await self._quietly(
                station.store.raise_alarm_once,
                "backup_failed",
                f"the scheduled backup failed: {exc}",
                severity="warning",
                detail={"code": exc.code},
            )
            return False
        if self.last_error is not None:
            self.log.info("backup_recovered")
        self.last_error = None
        self.last_backup = backup
        self.log.info("backup_taken", backup=str(backup.path), bytes=backup.bytes)
        await self._quietly(station.store.clear_alarm, "backup_failed")
        return True

    # ------------------------------------------------------------------ retention
    async def _retention(self) -> None:
        await asyncio.sleep(FIRST_RETENTION_S)
        while True:
            await self.purge_now()
            await asyncio.sleep(RETENTION_EVERY_S)

    async def purge_now(self) -> dict[str, int]:
        before = self._now() - timedelta(days=self.config.store.keep_days)
        stamp = before.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            removed = await self.station.db_quiet(self.station.store.purge_old_records, stamp)
        except StoreError as exc:
            self.log.warning("retention_failed", error=str(exc))
            return {}
        if any(removed.values()):
            self.log.info("retention_done", before=stamp, **removed)
        return removed

    async def _quietly(self, fn: Callable[..., object], *args: object, **kw: object) -> None:
        """An alarm write: when the store itself cannot write, the log line above is all."""
        try:
            await self.station.db(fn, *args, **kw)
        except StoreError as exc:
            self.log.warning("backup_alarm_not_recorded", error=str(exc))
