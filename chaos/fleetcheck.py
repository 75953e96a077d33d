"""The end-of-run checks of `make fleet` (chaos/fleet.py): the stations' own stores against
what the backend holds in PostgreSQL, and the orders the load generator sent.

- every sale of every station is in PostgreSQL exactly once and equal to the station's own
  record (pump, nozzle, grade, volume, amount);
- every order the generator sent was answered, and every accepted one ended (completed,
  cancelled, expired or failed) in the station's store and in PostgreSQL;
- no gap is left open in any station's stream;
- every outbox is empty (the backend acknowledged everything).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.fleet import Fleet, Generator

TERMINAL = frozenset({"completed", "cancelled", "expired", "failed"})
_SALE_FIELDS = ("pump", "nozzle", "grade", "volume", "amount")


def station_sales(fleet: Fleet) -> dict[tuple[str, str], dict[str, Any]]:
    """(station, sale uid) → the station's own record of the sale."""
    sales: dict[tuple[str, str], dict[str, Any]] = {}
    for st in fleet.stations:
        for row in st.read("SELECT uid, pump, nozzle, grade, volume, amount FROM sales"):
            sales[(st.station_id, str(row["uid"]))] = row
    return sales


def check_stores(fleet: Fleet, gen: Generator) -> dict[str, int]:
    """What the stations alone can tell: outboxes empty, every order answered and ended."""
    counts = {"sales": 0, "orders": 0, "orders_open": 0}
    orders: dict[str, dict[str, Any]] = {}
    for st in fleet.stations:
        depth = st.outbox_depth()
        if depth:
            fleet.problems.append(f"{st.station_id}: {depth} message(s) left in the outbox")
        counts["sales"] += len(st.read("SELECT id FROM sales"))
        for row in st.read("SELECT order_id, status, reason FROM orders"):
            orders[str(row["order_id"])] = {**row, "station": st.station_id}
    for order_id, station in gen.orders.items():
        found = orders.get(order_id)
        if found is None:
            if order_id not in gen.refused:
                fleet.problems.append(f"{station}: order {order_id} never reached the store")
            continue
        row = found
        counts["orders"] += 1
        if row["status"] not in TERMINAL:
            counts["orders_open"] += 1
            fleet.problems.append(f"{station}: order {order_id} is still {row['status']}")
    return counts


def check_backend(fleet: Fleet, conn: Any, schema: str) -> dict[str, int]:
    """PostgreSQL against the stores: each sale once and equal, no open gap, orders ended."""
    ours = station_sales(fleet)
    counts = {"backend_sales": 0, "backend_events": 0, "open_gaps": 0}
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT station, uid, pump, nozzle, grade, volume::text, amount::text, COUNT(*) OVER"
            f' (PARTITION BY station, uid) FROM "{schema}".sales'
        )
        seen: set[tuple[str, str]] = set()
        for station, uid, pump, nozzle, grade, volume, amount, copies in cur.fetchall():
            key = (str(station), str(uid))
            counts["backend_sales"] += 1
            if copies != 1:
                fleet.problems.append(f"{station}: sale {uid} is stored {copies} times")
            mine = ours.get(key)
            if mine is None:
                fleet.problems.append(f"{station}: sale {uid} in PostgreSQL but not in the store")
                continue
            theirs = {
                "pump": pump,
                "nozzle": nozzle,
                "grade": grade,
                "volume": volume,
                "amount": amount,
            }
            for name in _SALE_FIELDS:
                if str(mine[name]) != str(theirs[name]):
                    fleet.problems.append(
                        f"{station}: sale {uid} {name} is {theirs[name]} in PostgreSQL, "
                        f"{mine[name]} in the store"
                    )
            seen.add(key)
        for station, uid in sorted(set(ours) - seen):
            fleet.problems.append(f"{station}: sale {uid} is missing from PostgreSQL")
        cur.execute(f'SELECT COUNT(*) FROM "{schema}".events')
        counts["backend_events"] = int(cur.fetchone()[0])
        cur.execute(f'SELECT station, stream, from_seq, to_seq FROM "{schema}".gaps')
        for station, stream, low, high in cur.fetchall():
            counts["open_gaps"] += 1
            fleet.problems.append(f"{station}: gap {stream} {low}..{high} left open")
    return counts


def check(fleet: Fleet, gen: Generator) -> None:
    fleet.figures.update(check_stores(fleet, gen))
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    with psycopg.connect(fleet.args.dsn) as conn:
        fleet.figures.update(check_backend(fleet, conn, fleet.schema))
        fleet.figures.update(backend_figures(conn, fleet.schema, fleet.figures))


def backend_figures(conn: Any, schema: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Events per second into PostgreSQL over the fleet phase, and the backend's lag."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT EXTRACT(EPOCH FROM percentile_cont(0.99) WITHIN GROUP"
            f' (ORDER BY received_at - sent_at)) FROM "{schema}".events'
            f" WHERE sent_at IS NOT NULL"
        )
        lag = cur.fetchone()[0]
    phase = figures.get("fleet_phase_s") or 0
    out: dict[str, Any] = {"backend_lag_p99_s": float(lag) if lag is not None else None}
    if phase:
        out["events_per_s"] = figures.get("backend_events", 0) / phase
    return out
