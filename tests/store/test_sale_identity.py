"""A sale's identity and the facts about lifts that must survive a restart (issue 9.2, 9.3)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.forecourt.sale import AuthorizationSource
from edgectl.store.store import Store
from tests.store.test_store import make_sale


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "edgectl.db", messages=ContractMessages())
    yield s
    s.close()


def test_the_same_sale_read_again_is_recognised(store: Store) -> None:
    first = store.record_sale(make_sale())
    again = store.record_sale(make_sale())
    assert again.id == first.id and not again.created and again.conflict is None


@pytest.mark.parametrize(
    "other",
    [
        {"nozzle": 2},  # same authorization, credited to another nozzle
        {"volume": Decimal("2.69"), "amount": Decimal("21.22")},  # same totals, other figures
        {"amount": Decimal("78.91")},
    ],
)
def test_a_different_fill_with_a_sales_identity_is_a_conflict_not_a_repeat(
    store: Store, other: dict[str, object]
) -> None:
    """A fill matching a recorded sale's identity (nozzle totals or authorization) but not
    its figures is not that sale: reporting it as 'already recorded' would let the pump be
    reset and the fill be lost."""
    auth = store.create_authorization(1, AuthorizationSource.AUTO, nozzles=(1,))
    first = store.record_sale(make_sale(authorization_id=auth.id))
    again = store.record_sale(make_sale(authorization_id=auth.id, **other))
    assert not again.created and again.id == first.id
    assert again.conflict is not None and f"sale {first.id}" in again.conflict
    assert len(store.sales()) == 1


def test_a_served_lift_is_remembered_until_the_nozzle_is_hung_up(tmp_path: Path) -> None:
    path = tmp_path / "edgectl.db"
    store = Store(path, messages=ContractMessages())
    assert not store.lift_served(1)
    store.create_authorization(1, AuthorizationSource.AUTO, nozzles=(1,), serves_lift=True)
    store.create_authorization(2, AuthorizationSource.ATTENDANT)
    assert store.lift_served(1) and not store.lift_served(2)
    store.close()
    again = Store(path, messages=ContractMessages())  # a restart, the nozzle still lifted
    assert again.lift_served(1)
    again.lift_ended(1)
    assert not again.lift_served(1)
    again.close()
    assert not Store(path, messages=ContractMessages()).lift_served(1)


# The dispenser's own number for a stored sale (IFSF: TR_Seq_Nb) is part of its identity
# (issue 15.4: "fuelling point + TR_Seq_Nb + totals"): a sale read again whose totals came out
# otherwise (not read, or figured from a buffer that changed) is still the same sale.
@pytest.mark.parametrize(
    "read_again",
    [
        # totals not read this time: the identity falls back to the authorization and end time
        {
            "total_volume_after": None,
            "total_amount_after": None,
            "ended_at": "2026-11-24T10:05:00.000Z",
        },
        # totals figured otherwise (a later sale of the nozzle counted in)
        {"total_volume_after": Decimal("1012.00"), "total_amount_after": Decimal("7994.68")},
    ],
)
def test_a_sale_read_again_is_known_by_the_dispensers_number(
    store: Store, read_again: dict[str, object]
) -> None:
    first = store.record_sale(make_sale(reference="TR 0042"))
    again = store.record_sale(make_sale(reference="TR 0042", **read_again))
    assert again.id == first.id and not again.created and again.conflict is None
    assert len(store.sales()) == 1
    assert store.query("SELECT dispenser_ref FROM sales") == [{"dispenser_ref": "TR 0042"}]


def test_the_dispensers_number_alone_does_not_make_two_fills_one(store: Store) -> None:
    """Another fill with the same number (a replaced board counting from 1 again, or the
    counter's wrap) is another sale: the number only joins fills with the same figures."""
    store.record_sale(make_sale(reference="TR 0001"))
    other = store.record_sale(
        make_sale(
            reference="TR 0001",
            volume=Decimal("5.00"),
            amount=Decimal("39.45"),
            total_volume_after=Decimal("1015.00"),
            total_amount_after=Decimal("8018.35"),
        )
    )
    assert other.created and other.conflict is None


def test_the_dispensers_number_is_looked_up_among_the_pumps_recent_sales_only(
    store: Store,
) -> None:
    """The same figures and number long after (the counter went round) are a new sale."""
    store.record_sale(make_sale(reference="TR 0007"))
    for n in range(40):
        total = Decimal("1010.00") + 10 * (n + 1)
        store.record_sale(
            make_sale(
                reference=f"TR {n + 100:04d}",
                total_volume_after=total,
                total_amount_after=total * Decimal("7.89"),
            )
        )
    late = store.record_sale(
        make_sale(
            reference="TR 0007",
            total_volume_after=Decimal("2000.00"),
            total_amount_after=Decimal("15780.00"),
        )
    )
    assert late.created


def test_same_totals_under_another_dispenser_number_is_a_conflict(store: Store) -> None:
    """Two stored sales of the dispenser cannot end on the same totals: one of the figures is
    wrong, and the pump is held for a person (nothing reset, nothing lost)."""
    first = store.record_sale(make_sale(reference="TR 0042"))
    again = store.record_sale(make_sale(reference="TR 0043"))
    assert not again.created and again.conflict is not None and f"sale {first.id}" in again.conflict
    assert "TR 0042" in again.conflict and "TR 0043" in again.conflict


def test_a_fill_without_a_number_keeps_the_old_identity(store: Store) -> None:
    first = store.record_sale(make_sale())
    again = store.record_sale(make_sale(reference="TR 0042"))
    assert again.id == first.id and again.conflict is None


# A pump that gives no totals (DART pumps without DC101): its sale is named by its
# authorization, which the commit closes. Until the pump is reset after it (or authorized
# again) the pump may still hold that fill: the same figures read there are that sale.
_NO_TOTALS: dict[str, object] = {"total_volume_after": None, "total_amount_after": None}


def test_a_fill_without_totals_read_again_before_the_reset_is_its_sale(store: Store) -> None:
    auth = store.create_authorization(1, AuthorizationSource.AUTO, nozzles=(1,))
    first = store.record_sale(make_sale(authorization_id=auth.id, **_NO_TOTALS))
    later = "2026-11-24T10:07:00.000Z"  # read again after a restart: no authorization open
    again = store.record_sale(make_sale(ended_at=later, **_NO_TOTALS))
    assert again.id == first.id and not again.created and again.conflict is None
    assert len(store.sales()) == 1


@pytest.mark.parametrize("then", ["reset", "authorized", "ordered"])
def test_after_the_reset_or_a_new_authorization_the_same_figures_are_a_new_sale(
    store: Store, then: str
) -> None:
    store.record_sale(make_sale(**_NO_TOTALS))
    if then == "reset":
        store.pump_reset(1)
        auth_id = None
    elif then == "authorized":
        auth_id = store.create_authorization(1, AuthorizationSource.AUTO).id
    else:
        auth_id = store.create_order(
            order_id="o-1",
            cmd_id="c-1",
            pump=1,
            preset_type="amount",
            preset_value=Decimal("78.90"),
            currency="CNY",
            nozzles=(1,),
            grades=(),
            payment_method=None,
            expires_at=None,
        ).id
    later = store.record_sale(
        make_sale(ended_at="2026-11-24T10:09:00.000Z", authorization_id=auth_id, **_NO_TOTALS)
    )
    assert later.created
    assert len(store.sales()) == 2


def test_only_the_pumps_last_sale_and_only_its_own_pump_are_held(store: Store) -> None:
    store.record_sale(make_sale(**_NO_TOTALS))
    other_pump = store.record_sale(
        make_sale(pump=2, ended_at="2026-11-24T10:01:00.000Z", **_NO_TOTALS)
    )
    assert other_pump.created
    other_figures = store.record_sale(
        make_sale(
            volume=Decimal("5.00"),
            amount=Decimal("39.45"),
            ended_at="2026-11-24T10:02:00.000Z",
            **_NO_TOTALS,
        )
    )
    assert other_figures.created and other_figures.conflict is None
