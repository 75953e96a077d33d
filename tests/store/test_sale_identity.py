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
