"""What the device monitor gathered: each device's state, its recent events, its error counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgectl.store.core import StoreCore


class Devices(StoreCore):
    """The device_state, device_events and device_counts tables."""

    def record_device_activity(
        self,
        states: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
        counts: Sequence[tuple[str, str, str, int]],
        *,
        keep_events: int = 200,
        counts_since: str | None = None,
    ) -> None:
        """What the device monitor gathered since its last flush, in one commit: each
        device's state (upserted), its new events (the newest `keep_events` per device are
        kept), its error counts (device, 10-minute bucket, kind, n: added; buckets before
        `counts_since` deleted)."""
        now = self._clock()
        with self.transaction() as tx:
            for state in states:
                tx.execute(
                    "INSERT INTO device_state (device, kind, online, fault, reason, last_seen_at,"
                    " offline_since, online_since, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (device) DO UPDATE SET kind = excluded.kind,"
                    " online = excluded.online, fault = excluded.fault,"
                    " reason = excluded.reason,"
                    " last_seen_at = COALESCE(excluded.last_seen_at, last_seen_at),"
                    " offline_since = COALESCE(excluded.offline_since, offline_since),"
                    " online_since = COALESCE(excluded.online_since, online_since),"
                    " updated_at = excluded.updated_at",
                    (
                        state["device"],
                        state["kind"],
                        state.get("online"),
                        state.get("fault"),
                        state.get("reason"),
                        state.get("last_seen_at"),
                        state.get("offline_since"),
                        state.get("online_since"),
                        now,
                    ),
                )
            devices = set()
            for event in events:
                devices.add(event["device"])
                tx.execute(
                    "INSERT INTO device_events (device, at, event, kind, count, message)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event["device"],
                        event["at"],
                        event["event"],
                        event.get("kind"),
                        event.get("count", 1),
                        event.get("message"),
                    ),
                )
            for device in sorted(devices):
                tx.execute(
                    "DELETE FROM device_events WHERE device = ? AND id <= (SELECT id FROM"
                    " device_events WHERE device = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (device, device, keep_events),
                )
            for device, bucket, kind, n in counts:
                tx.execute(
                    "INSERT INTO device_counts (device, bucket, kind, count) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (device, bucket, kind) DO UPDATE SET count = count + ?",
                    (device, bucket, kind, n, n),
                )
            if counts_since is not None:
                tx.execute("DELETE FROM device_counts WHERE bucket < ?", (counts_since,))
