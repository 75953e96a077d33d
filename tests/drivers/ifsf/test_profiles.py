"""IFSF dialects as profiles: their values, and the node settings they give."""

from __future__ import annotations

import dataclasses

import pytest

from drivers.ifsf.codec import MC_APPLICATION, MC_COMMUNICATION_SERVICE
from drivers.ifsf.encodings import Lna
from drivers.ifsf.profiles import (
    GENERIC,
    OFFLINE_SALE_IDS,
    PETROCHINA,
    PRICE_CHANGE_OK,
    PROFILES,
    SINOPEC,
    Configure,
    RecipientForm,
    profile,
)


def test_the_three_profiles_are_named() -> None:
    assert set(PROFILES) == {"generic", "petrochina", "sinopec"}
    assert profile("PetroChina") is PETROCHINA
    with pytest.raises(ValueError, match="known: generic, petrochina, sinopec"):
        profile("wayne")


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GENERIC.heartbeat_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "port", "mc", "form", "configure", "per_nozzle", "offline"),
    [
        ("generic", 3486, MC_APPLICATION, RecipientForm.LNA, Configure.FULL, False, ()),
        (
            "petrochina",
            3485,
            MC_COMMUNICATION_SERVICE,
            RecipientForm.LNA,
            Configure.PRICES,
            True,
            OFFLINE_SALE_IDS,
        ),
        (
            "sinopec",
            3486,
            MC_APPLICATION,
            RecipientForm.HEARTBEAT,
            Configure.PRODUCTS,
            False,
            OFFLINE_SALE_IDS,
        ),
    ],
)
def test_what_each_dialect_says(
    name: str,
    port: int,
    mc: int,
    form: RecipientForm,
    configure: Configure,
    per_nozzle: bool,
    offline: tuple[int, ...],
) -> None:
    p = PROFILES[name]
    assert p.heartbeat_port == port
    assert p.com_sv_mc == mc
    assert p.recipient_form is form
    assert p.configure is configure
    assert p.node_per_nozzle is per_nozzle
    assert p.offline_sale_ids == offline
    assert p.offline_sales is bool(offline)
    assert p.controller_lna == Lna(2, 1)
    assert p.heartbeat_interval_s == 10.0 and p.missed_heartbeats == 3


def test_offline_ids_and_the_price_change_confirmation() -> None:
    assert OFFLINE_SALE_IDS == (0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD)
    assert PRICE_CHANGE_OK == 0x99
    assert PRICE_CHANGE_OK in PETROCHINA.informational_errors
    assert PRICE_CHANGE_OK in SINOPEC.informational_errors
    assert not GENERIC.informational_errors
    assert PETROCHINA.price_change_faults == (0x35, 0x36, 0x37, 0x38)


def test_link_settings_follow_the_profile_and_overrides_win() -> None:
    settings = PETROCHINA.link_settings()
    assert settings.heartbeat_port == 3485
    assert settings.heartbeat_destinations == (("255.255.255.255", 3485),)
    assert settings.tcp_port == 6666 and settings.com_sv_mc == MC_COMMUNICATION_SERVICE
    assert settings.lnas == (Lna(2, 1),)
    local = GENERIC.link_settings(
        heartbeat_port=0, heartbeat_destinations=(("127.0.0.1", 40001),), tcp_port=0
    )
    assert local.heartbeat_destinations == (("127.0.0.1", 40001),)
    assert local.tcp_port == 0 and local.heartbeat_port == 0
    subnet = SINOPEC.with_(broadcast="192.168.1.255").link_settings(heartbeat_interval_s=5)
    assert subnet.heartbeat_destinations == (("192.168.1.255", 3486),)
    assert subnet.heartbeat_interval_s == 5


def test_a_site_variant_is_a_changed_copy() -> None:
    variant = PETROCHINA.with_(heartbeat_port=3486)
    assert variant.heartbeat_port == 3486 and PETROCHINA.heartbeat_port == 3485
    assert variant.name == "petrochina"
