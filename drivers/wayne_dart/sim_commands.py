"""The DART simulator's control language: one line of text in, one typed command out.

Pure: no I/O, no clock, no simulator. A staging backend, a person at `socat`, or a script
file all send these lines; `sim_control` carries them out. Anything that is not a command
comes back as a `CommandSyntaxError` naming what is wrong, never as another exception,
so a stray byte on the control socket cannot take the simulator down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias, get_args

# A line longer than this is refused before it is looked at.
MAX_LINE: Final = 512

ErrorCode: TypeAlias = Literal[
    # from the parser
    "too_long",
    "unknown_command",
    "syntax",
    "bad_number",
    # from the executor
    "unknown_pump",
    "unknown_nozzle",
    "wrong_state",
    "not_authorized",
    "nozzle_not_allowed",
    "timeout",
    "walked_away",
    "unavailable",
]


class ControlError(Exception):
    """A command that cannot be carried out; the control reply is `error <code> <message>`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def reply(self) -> str:
        return f"error {self.code} {self.message}"


class CommandSyntaxError(ControlError):
    """The line is not a well-formed command (the parser's only exception)."""


# ======================================================================================
# Commands
# ======================================================================================
@dataclass(frozen=True, slots=True)
class PumpRef:
    """A pump as a command names it: its configured number (`1`), or its DART address
    written in hex (`0x50`), which names it only where no two lines share that address."""

    number: int | None = None
    address: int | None = None

    def __str__(self) -> str:
        return str(self.number) if self.number is not None else f"0x{self.address or 0:02X}"


# The states `wait PUMP STATE` knows: the DART statuses; `idle`, nozzle in and status
# reset, a pump the next customer may use (after a sale: the controller has read it and
# reset the pump, a DART pump takes an authorization only in reset); `nozzle-out`; and
# `offline`, a pump made silent.
WaitState: TypeAlias = Literal[
    "reset",
    "authorized",
    "filling",
    "suspended",
    "completed",
    "max-reached",
    "switched-off",
    "idle",
    "nozzle-out",
    "offline",
]
WAIT_STATES: Final[tuple[WaitState, ...]] = get_args(WaitState)


@dataclass(frozen=True, slots=True)
class Lift:
    pump: PumpRef
    nozzle: int


@dataclass(frozen=True, slots=True)
class Fill:
    """Wait (up to `wait_s`) for the pump's release, squeeze, let go at `amount`/`volume`
    (or when the pump stops the flow itself), within `timeout_s` of flowing."""

    pump: PumpRef
    amount: Decimal | None = None
    volume: Decimal | None = None
    rate_l_per_min: Decimal | None = None
    wait_s: Decimal | None = None
    timeout_s: Decimal | None = None


@dataclass(frozen=True, slots=True)
class HangUp:
    pump: PumpRef


@dataclass(frozen=True, slots=True)
class WalkAway:
    pump: PumpRef


@dataclass(frozen=True, slots=True)
class Refuse:
    """The pump NAKs its next `count` commands; None: every one until `accept`."""

    pump: PumpRef
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    pump: PumpRef


@dataclass(frozen=True, slots=True)
class Silent:
    """The pump stops answering; for `seconds` only when given, else until `answer`."""

    pump: PumpRef
    seconds: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    pump: PumpRef


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: Decimal


@dataclass(frozen=True, slots=True)
class WaitFor:
    pump: PumpRef
    state: WaitState
    timeout_s: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Status:
    pump: PumpRef | None = None


@dataclass(frozen=True, slots=True)
class Price:
    pump: PumpRef | None = None


@dataclass(frozen=True, slots=True)
class PowerCycle:
    """Mains off for `seconds` (silent meanwhile), then on: the line layer starts afresh."""

    pump: PumpRef
    seconds: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Customers:
    mode: Literal["random", "none"]


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


Command: TypeAlias = (
    Lift
    | Fill
    | HangUp
    | WalkAway
    | Refuse
    | Accept
    | Silent
    | Answer
    | Sleep
    | WaitFor
    | Status
    | Price
    | PowerCycle
    | Customers
    | Help
    | Quit
)

# One line each, as `help` answers and the docs list them.
USAGE: Final = (
    "lift PUMP NOZZLE",
    "fill PUMP [amount A | volume V] [rate L_PER_MIN] [wait S] [timeout S]",
    "hangup PUMP",
    "walkaway PUMP",
    "refuse PUMP [COUNT]",
    "accept PUMP",
    "silent PUMP [SECONDS]",
    "answer PUMP",
    "wait SECONDS",
    f"wait PUMP {'|'.join(WAIT_STATES)} [timeout S]",
    "status [PUMP]",
    "price [PUMP]",
    "power-cycle PUMP [SECONDS]",
    "customers random|none",
    "help",
    "quit",
)


# ======================================================================================
# Parsing
# ======================================================================================
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,9}", re.ASCII)
_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{1,2}", re.ASCII)
# Split on ASCII blanks only: str.split() would also take Unicode spaces for separators.
_BLANKS = re.compile(r"[ \t\r\n\f\v]+", re.ASCII)

MAX_SECONDS: Final = Decimal(86_400)
MAX_RATE: Final = Decimal(1_000)  # L/min; a forecourt pump gives 5-130, a truck lane 200


def parse_command(text: str) -> Command | None:
    """The command on one line, None for a blank or comment-only line.

    Raises CommandSyntaxError, and nothing else, for whatever is not a command.
    """
    if len(text) > MAX_LINE:
        raise CommandSyntaxError("too_long", f"a command line is at most {MAX_LINE} characters")
    words = [w for w in _BLANKS.split(text.split("#", 1)[0]) if w]
    if not words:
        return None
    verb, args = words[0].lower(), words[1:]
    parse = _VERBS.get(verb)
    if parse is None:
        raise CommandSyntaxError(
            "unknown_command", f"unknown command {_shown(words[0])!s} (try help)"
        )
    return parse(args)


def _lift(args: list[str]) -> Command:
    _count(args, "lift PUMP NOZZLE", 2)
    return Lift(_pump(args[0]), _int(args[1], "nozzle", 1, 15))


def _fill(args: list[str]) -> Command:
    usage = USAGE[1]
    if not args:
        raise CommandSyntaxError("syntax", f"usage: {usage}")
    pump = _pump(args[0])
    options = _options(args[1:], ("amount", "volume", "rate", "wait", "timeout"), usage)
    if "amount" in options and "volume" in options:
        raise CommandSyntaxError("syntax", "give amount or volume, not both")
    amount = _positive(options["amount"], "amount") if "amount" in options else None
    volume = _positive(options["volume"], "volume") if "volume" in options else None
    rate = None
    if "rate" in options:
        rate = _positive(options["rate"], "rate")
        if rate > MAX_RATE:
            raise CommandSyntaxError("bad_number", f"rate is at most {MAX_RATE} L/min")
    wait = _seconds(options["wait"], "wait") if "wait" in options else None
    timeout = _seconds(options["timeout"], "timeout") if "timeout" in options else None
    return Fill(pump, amount, volume, rate, wait, timeout)


def _hangup(args: list[str]) -> Command:
    _count(args, "hangup PUMP", 1)
    return HangUp(_pump(args[0]))


def _walkaway(args: list[str]) -> Command:
    _count(args, "walkaway PUMP", 1)
    return WalkAway(_pump(args[0]))


def _refuse(args: list[str]) -> Command:
    _count(args, "refuse PUMP [COUNT]", 1, 2)
    count = _int(args[1], "count", 1, 1_000_000) if len(args) == 2 else None
    return Refuse(_pump(args[0]), count)


def _accept(args: list[str]) -> Command:
    _count(args, "accept PUMP", 1)
    return Accept(_pump(args[0]))


def _silent(args: list[str]) -> Command:
    _count(args, "silent PUMP [SECONDS]", 1, 2)
    seconds = _seconds(args[1], "seconds") if len(args) == 2 else None
    return Silent(_pump(args[0]), seconds)


def _answer(args: list[str]) -> Command:
    _count(args, "answer PUMP", 1)
    return Answer(_pump(args[0]))


def _wait(args: list[str]) -> Command:
    usage = f"wait SECONDS, or {USAGE[9]}"
    if len(args) == 1:
        return Sleep(_seconds(args[0], "seconds"))
    if len(args) not in (2, 4):
        raise CommandSyntaxError("syntax", f"usage: {usage}")
    pump = _pump(args[0])
    state = next((s for s in WAIT_STATES if s == args[1].lower()), None)
    if state is None:
        raise CommandSyntaxError(
            "syntax", f"unknown state {_shown(args[1])}; one of {', '.join(WAIT_STATES)}"
        )
    options = _options(args[2:], ("timeout",), usage)
    timeout = _seconds(options["timeout"], "timeout") if "timeout" in options else None
    return WaitFor(pump, state, timeout)


def _status(args: list[str]) -> Command:
    _count(args, "status [PUMP]", 0, 1)
    return Status(_pump(args[0]) if args else None)


def _price(args: list[str]) -> Command:
    _count(args, "price [PUMP]", 0, 1)
    return Price(_pump(args[0]) if args else None)


def _power_cycle(args: list[str]) -> Command:
    _count(args, "power-cycle PUMP [SECONDS]", 1, 2)
    seconds = _seconds(args[1], "seconds") if len(args) == 2 else None
    return PowerCycle(_pump(args[0]), seconds)


def _customers(args: list[str]) -> Command:
    _count(args, "customers random|none", 1)
    mode = args[0].lower()
    if mode == "random":
        return Customers("random")
    if mode == "none":
        return Customers("none")
    raise CommandSyntaxError("syntax", "usage: customers random|none")


def _help(args: list[str]) -> Command:
    _count(args, "help", 0)
    return Help()


def _quit(args: list[str]) -> Command:
    _count(args, "quit", 0)
    return Quit()


_VERBS = {
    "lift": _lift,
    "fill": _fill,
    "hangup": _hangup,
    "walkaway": _walkaway,
    "refuse": _refuse,
    "accept": _accept,
    "silent": _silent,
    "answer": _answer,
    "wait": _wait,
    "status": _status,
    "price": _price,
    "power-cycle": _power_cycle,
    "customers": _customers,
    "help": _help,
    "quit": _quit,
}


# -- pieces ----------------------------------------------------------------------------
def _count(args: list[str], usage: str, least: int, most: int | None = None) -> None:
    if not least <= len(args) <= (least if most is None else most):
        raise CommandSyntaxError("syntax", f"usage: {usage}")


def _options(args: list[str], names: tuple[str, ...], usage: str) -> dict[str, str]:
    """`name value` pairs, each name at most once."""
    if len(args) % 2:
        raise CommandSyntaxError("syntax", f"usage: {usage}")
    found: dict[str, str] = {}
    for name, value in zip(args[::2], args[1::2], strict=True):
        key = name.lower()
        if key not in names:
            raise CommandSyntaxError("syntax", f"unknown option {_shown(name)}; usage: {usage}")
        if key in found:
            raise CommandSyntaxError("syntax", f"{key} is given twice")
        found[key] = value
    return found


def _pump(word: str) -> PumpRef:
    if _ADDRESS.fullmatch(word):
        address = int(word, 16)
        if not 0x50 <= address <= 0x6F:
            raise CommandSyntaxError("bad_number", f"pump address {word} is outside 0x50-0x6F")
        return PumpRef(address=address)
    return PumpRef(number=_int(word, "pump", 1, 99))


def _int(word: str, what: str, lo: int, hi: int) -> int:
    if not _NUMBER.fullmatch(word) or not lo <= int(word) <= hi:
        raise CommandSyntaxError(
            "bad_number", f"{what} must be a whole number {lo}-{hi}, not {_shown(word)}"
        )
    return int(word)


def _decimal(word: str, what: str) -> Decimal:
    if not _DECIMAL.fullmatch(word):
        raise CommandSyntaxError(
            "bad_number", f"{what} must be a plain decimal number, not {_shown(word)}"
        )
    return Decimal(word)


def _positive(word: str, what: str) -> Decimal:
    value = _decimal(word, what)
    if value <= 0:
        raise CommandSyntaxError("bad_number", f"{what} must be more than 0")
    return value


def _seconds(word: str, what: str) -> Decimal:
    value = _decimal(word, what)
    if value > MAX_SECONDS:
        raise CommandSyntaxError("bad_number", f"{what} is at most {MAX_SECONDS} seconds")
    return value


def _shown(word: str) -> str:
    """A word quoted for an error reply: printable ASCII, cut short, on one line."""
    cut = word[:32]
    safe = "".join(c if " " < c < "\x7f" else "?" for c in cut)
    return repr(safe + ("..." if len(word) > 32 else ""))
