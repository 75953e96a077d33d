"""The pumps the site closed (`edgectl close PUMP`), kept so that a restart keeps them closed.

One `meta` row per closed pump (`pump_closed:{pump}`), its value the closure as JSON; opening
the pump deletes it. Functions over a `Store` (its transaction and reads), called on the
station's store thread like the store's own methods.
"""

from __future__ import annotations

import json

from edgectl.forecourt.pump import Closure
from edgectl.store.store import Store


def _key(pump: int) -> str:
    return f"pump_closed:{pump}"


def closure(store: Store, pump: int) -> Closure | None:
    """The pump's closure, or None when it is open."""
    rows = store.query("SELECT value FROM meta WHERE key = ?", (_key(pump),))
    if not rows:
        return None
    try:
        value = json.loads(rows[0]["value"])
    except ValueError:
        value = {}
    if not isinstance(value, dict):
        value = {}
    return Closure(
        at=str(value.get("at") or "?"),
        by=value.get("by") if isinstance(value.get("by"), str) else None,
        reason=value.get("reason") if isinstance(value.get("reason"), str) else None,
    )


def close(store: Store, pump: int, closure: Closure) -> None:
    value = json.dumps({"at": closure.at, "by": closure.by, "reason": closure.reason})
    with store.transaction() as tx:
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_key(pump), value))


def open_pump(store: Store, pump: int) -> None:
    with store.transaction() as tx:
        tx.execute("DELETE FROM meta WHERE key = ?", (_key(pump),))
