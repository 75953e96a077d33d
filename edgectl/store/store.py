"""The station's durable store: authorizations, sales, totals, alarms and the outbox in SQLite.

`Store` is the one object the daemon opens; each concern is a module of its own (the class
each one contributes is named after it), all over one connection (`core`), and the cloud's
message shapes come from the `OutboxMessages` the store is opened with (`messages`):

    core            opening, identity, migrations, transactions, write faults
    tx              one transaction's statements: the outbox queue and its quota, alarms,
                    an order's step, a nozzle's totals
    authorizations  why a pump is released, and each authorization's moves
    orders          pay-at-pump orders and their steps, a sale's payment cleared
    inbox           cloud commands, persisted before they act, and their results
    prices          price sets received, activated, confirmed; the prices in force
    sales           sales, recorded once, and the nozzles' totals
    alarms          the station's, pumps' and devices' alarms
    tanks           inventory, deliveries, reconciliations, tank alarms
    outbox          what waits for the broker or the backend, and what they took
    retention       old records deleted, never one the cloud has not taken
    audit, shifts, devices   the technician's records
    reader          read-only queries, over the daemon's connection or the CLI's own
"""

from __future__ import annotations

from edgectl.store.alarms import Alarms
from edgectl.store.audit import Audit
from edgectl.store.core import StoreCore, lock_path
from edgectl.store.devices import Devices
from edgectl.store.inbox import Inbox
from edgectl.store.orders import OrderExists, Orders
from edgectl.store.outbox import OutboxRow
from edgectl.store.prices import Prices
from edgectl.store.reader import StoreReader, open_read_only
from edgectl.store.retention import Retention
from edgectl.store.rows import device_bucket, utc_now
from edgectl.store.sales import RecordedSale, Sales
from edgectl.store.shifts import Shifts
from edgectl.store.tanks import Tanks
from edgectl.store.tx import NEVER_DROPPED, PRIORITY_EVENT, PRIORITY_SALE, PRIORITY_TELEMETRY, Tx

__all__ = [
    "NEVER_DROPPED",
    "PRIORITY_EVENT",
    "PRIORITY_SALE",
    "PRIORITY_TELEMETRY",
    "OrderExists",
    "OutboxRow",
    "RecordedSale",
    "Store",
    "StoreCore",
    "StoreReader",
    "Tx",
    "device_bucket",
    "lock_path",
    "open_read_only",
    "utc_now",
]


class Store(Orders, Inbox, Prices, Sales, Alarms, Tanks, Retention, Audit, Shifts, Devices):
    """One SQLite connection in WAL mode with synchronous=FULL, every concern's reads and
    writes on it (see `StoreCore` for transactions and write faults). Not thread-safe: the
    daemon calls it from a single worker thread."""
