"""IFSF dialects as named profiles: what differs between a generic IFSF/IP dispenser and the
PetroChina and Sinopec ones, as data the same node and start-up code read.

Every value is from ifsf-over-ip.md, with its source next to it; where the sources disagree
the profile picks one and docs/drivers.md ("IFSF: profiles") says which and why. A station's
config names a profile and may override its ports (`Profile.link_settings(...)`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from drivers.ifsf.codec import MC_APPLICATION, MC_COMMUNICATION_SERVICE
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import HEARTBEAT_PORT, LinkSettings
from drivers.ifsf.node import DEFAULT_CD
from drivers.ifsf.profile_names import PROFILE_NAMES

OFFLINE_SALE_IDS = tuple(range(0xC8, 0xCE))  # C8h read ... CDh end total (SINOPEC, ZSY)
PRICE_CHANGE_OK = 0x99  # error entry 99h: "price change successful" (ZSY, ZHY)
PRICE_CHANGE_FAULTS = tuple(range(0x35, 0x39))


class RecipientForm(enum.Enum):
    """How Add_Recipient_Addr carries the controller: its LNA (ZSY capture, TAG, LON), or its
    whole heartbeat record (SINOPEC WriteSV_DATA)."""

    LNA = "lna"
    HEARTBEAT = "heartbeat"


class Configure(enum.Enum):
    """What the controller sets up at start-up before Open_FP (ifsf-over-ip.md §8)."""

    NOTHING = "nothing"  # the dispenser is configured at its own keypad or web page
    PRICES = "prices"  # Prod_Price per product and mode only
    PRODUCTS = "products"  # Prod_Nb per product, then the prices
    FULL = "full"  # also the calculator, the nozzles' products and the FP settings


@dataclass(frozen=True, slots=True)
class Profile:
    """One dialect of IFSF over TCP/IP."""

    name: str
    description: str
    heartbeat_port: int = HEARTBEAT_PORT
    heartbeat_interval_s: float = 10.0
    missed_heartbeats: int = 3
    broadcast: str = "255.255.255.255"
    controller_port: int = 4368  # our TCP server; any works, as the heartbeat advertises it
    controller_lna: Lna = DEFAULT_CD
    com_sv_mc: int = MC_APPLICATION
    recipient_form: RecipientForm = RecipientForm.LNA
    configure: Configure = Configure.FULL
    # One node per nozzle (Hengshan DIT): every nozzle is its own LNA, with FP 21h and one
    # logical nozzle, and the node number is the station's nozzle number.
    node_per_nozzle: bool = False
    offline_sale_ids: tuple[int, ...] = ()
    # Error codes that are news, not faults: the dispenser confirms a price change with 99h.
    informational_errors: frozenset[int] = frozenset()
    price_change_faults: tuple[int, ...] = ()
    write_heartbeat_interval: bool = False

    @property
    def offline_sales(self) -> bool:
        return bool(self.offline_sale_ids)

    def link_settings(self, **overrides: Any) -> LinkSettings:
        """The node settings this profile implies; `overrides` (any LinkSettings field) win.
        The heartbeat goes to the profile's broadcast address on its heartbeat port unless
        `heartbeat_destinations` is given."""
        port = overrides.get("heartbeat_port", self.heartbeat_port)
        settings: dict[str, Any] = {
            "lnas": (self.controller_lna,),
            "tcp_port": self.controller_port,
            "heartbeat_port": port,
            "heartbeat_destinations": ((self.broadcast, port or self.heartbeat_port),),
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "missed_heartbeats": self.missed_heartbeats,
            "com_sv_mc": self.com_sv_mc,
        }
        settings.update(overrides)
        return LinkSettings(**settings)

    def with_(self, **changes: Any) -> Profile:
        """This profile with some values changed (a site whose dispensers differ)."""
        return replace(self, **changes)


GENERIC = Profile(
    "generic",
    "IFSF over TCP/IP as the open implementations agree: heartbeat on UDP 3486 (IANA), "
    "the controller configures calculator, products, prices and nozzles (LON start-up)",
)
PETROCHINA = Profile(
    "petrochina",
    "PetroChina (中国石油) stations, Tokheim/Hengshan DIT and TQC dispensers: heartbeat on "
    "UDP 3485, IFSF_MC 2 on COM_SV, one node per nozzle, prices downloaded by the controller, "
    "offline sales C8h-CDh, error 99h confirms a price change",
    heartbeat_port=3485,  # ZSY sys.ini, the DIT web page in LITE (TQC screens show 3486)
    controller_port=6666,  # ZSY's PetroChina FS; boards connect back to this port
    com_sv_mc=MC_COMMUNICATION_SERVICE,  # ZSY captures of the PetroChina FS (E9)
    configure=Configure.PRICES,  # nozzles and products are set on the dispenser (LITE)
    node_per_nozzle=True,  # LITE (DIT), ZSY sys.ini nodes 01.09-01.12
    offline_sale_ids=OFFLINE_SALE_IDS,
    informational_errors=frozenset({PRICE_CHANGE_OK}),
    price_change_faults=PRICE_CHANGE_FAULTS,
)
SINOPEC = Profile(
    "sinopec",
    "Sinopec (中石化) stations behind the CSSI protocol converter: heartbeat on UDP 3486, "
    "Add_Recipient_Addr as the heartbeat record, products and prices set by the controller, "
    "offline sales C8h-CDh, error 99h confirms a price change",
    recipient_form=RecipientForm.HEARTBEAT,  # SINOPEC WriteSV_DATA reads 10 bytes
    configure=Configure.PRODUCTS,  # SINOPEC ifsf_dspprod: Prod_Nb and prices writable
    offline_sale_ids=OFFLINE_SALE_IDS,
    informational_errors=frozenset({PRICE_CHANGE_OK}),
    price_change_faults=PRICE_CHANGE_FAULTS,
)
PROFILES: Mapping[str, Profile] = {p.name: p for p in (GENERIC, PETROCHINA, SINOPEC)}
if tuple(sorted(PROFILES)) != PROFILE_NAMES:  # the names the config and the CLI offer
    raise ImportError(f"IFSF profiles {sorted(PROFILES)} are not profile_names.py's")


def profile(name: str) -> Profile:
    """The profile of that name; ValueError naming the known ones."""
    try:
        return PROFILES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"no IFSF profile {name!r} (known: {known})") from None
