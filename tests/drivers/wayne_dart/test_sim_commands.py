"""The simulator's control language: every command parses to its typed form, anything else
to a typed error, and no text whatever makes the parser raise anything else."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.wayne_dart.sim_commands import (
    MAX_LINE,
    USAGE,
    WAIT_STATES,
    Accept,
    Answer,
    Command,
    CommandSyntaxError,
    Customers,
    Fill,
    HangUp,
    Help,
    Lift,
    PowerCycle,
    Price,
    PumpRef,
    Quit,
    Refuse,
    Silent,
    Sleep,
    Status,
    WaitFor,
    WalkAway,
    parse_command,
)

P1 = PumpRef(number=1)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("lift 1 2", Lift(P1, 2)),
        ("LIFT 0x51 15", Lift(PumpRef(address=0x51), 15)),
        ("fill 1", Fill(P1)),
        ("fill 1 amount 20.00", Fill(P1, amount=Decimal("20.00"))),
        (
            "fill 1 volume 12.5 rate 40 wait 90 timeout 300",
            Fill(
                P1,
                volume=Decimal("12.5"),
                rate_l_per_min=Decimal(40),
                wait_s=Decimal(90),
                timeout_s=Decimal(300),
            ),
        ),
        ("fill 1 rate 60 amount 5", Fill(P1, amount=Decimal(5), rate_l_per_min=Decimal(60))),
        ("hangup 3", HangUp(PumpRef(number=3))),
        ("walkaway 1", WalkAway(P1)),
        ("refuse 1", Refuse(P1)),
        ("refuse 1 4", Refuse(P1, 4)),
        ("accept 1", Accept(P1)),
        ("silent 1", Silent(P1)),
        ("silent 1 2.5", Silent(P1, Decimal("2.5"))),
        ("answer 1", Answer(P1)),
        ("wait 0.25", Sleep(Decimal("0.25"))),
        ("wait 1 authorized", WaitFor(P1, "authorized")),
        ("wait 1 Idle timeout 30", WaitFor(P1, "idle", Decimal(30))),
        ("status", Status()),
        ("status 2", Status(PumpRef(number=2))),
        ("price", Price()),
        ("price 0x50", Price(PumpRef(address=0x50))),
        ("power-cycle 1", PowerCycle(P1)),
        ("power-cycle 1 3", PowerCycle(P1, Decimal(3))),
        ("customers random", Customers("random")),
        ("customers none", Customers("none")),
        ("help", Help()),
        ("quit", Quit()),
        ("  \tlift   1 1   # the customer arrives", Lift(P1, 1)),
    ],
)
def test_each_command_parses_to_its_typed_form(text: str, command: Command) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize("text", ["", "   ", "# a comment", "  # indented comment\n", "\r\n"])
def test_blank_and_comment_lines_are_no_command(text: str) -> None:
    assert parse_command(text) is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("dance 1", "unknown_command"),
        ("lift", "syntax"),
        ("lift 1", "syntax"),
        ("lift 1 1 1", "syntax"),
        ("lift one 1", "bad_number"),
        ("lift 0 1", "bad_number"),
        ("lift 100 1", "bad_number"),
        ("lift 1 16", "bad_number"),
        ("lift 1 -1", "bad_number"),
        ("lift 0x4F 1", "bad_number"),
        ("lift 0x70 1", "bad_number"),
        ("lift ١ 1", "bad_number"),  # an Arabic-Indic digit is no pump number
        ("fill", "syntax"),
        ("fill 1 amount", "syntax"),
        ("fill 1 amount 5 volume 5", "syntax"),
        ("fill 1 amount 5 amount 6", "syntax"),
        ("fill 1 litres 5", "syntax"),
        ("fill 1 amount 0", "bad_number"),
        ("fill 1 amount -5", "bad_number"),
        ("fill 1 amount NaN", "bad_number"),
        ("fill 1 amount Infinity", "bad_number"),
        ("fill 1 amount 1e3", "bad_number"),
        ("fill 1 amount 1,5", "bad_number"),
        ("fill 1 rate 1001", "bad_number"),
        ("fill 1 wait 86401", "bad_number"),
        ("wait", "syntax"),
        ("wait soon", "bad_number"),
        ("wait 1 dancing", "syntax"),
        ("wait 1 idle 30", "syntax"),
        ("wait 1 idle after 30", "syntax"),
        ("refuse 1 0", "bad_number"),
        ("status 1 2", "syntax"),
        ("customers some", "syntax"),
        ("help me", "syntax"),
        ("quit now", "syntax"),
        ("x" * (MAX_LINE + 1), "too_long"),
    ],
)
def test_what_is_not_a_command_is_a_typed_error(text: str, code: str) -> None:
    with pytest.raises(CommandSyntaxError) as caught:
        parse_command(text)
    assert caught.value.code == code
    reply = caught.value.reply()
    assert reply.startswith(f"error {code} ") and "\n" not in reply


def test_help_lists_every_verb() -> None:
    verbs = {usage.split()[0] for usage in USAGE}
    assert verbs == {
        "lift", "fill", "hangup", "walkaway", "refuse", "accept", "silent", "answer",
        "wait", "status", "price", "power-cycle", "customers", "help", "quit",
    }  # fmt: skip


def test_an_error_reply_shows_a_hostile_word_on_one_printable_line() -> None:
    with pytest.raises(CommandSyntaxError) as caught:
        parse_command("lift 1 \x1b[2J\x00" + "9" * 100)
    reply = caught.value.reply()
    assert reply.isprintable() and len(reply) < 200


# ----------------------------------------------------------------------------- properties
_WORDS = st.sampled_from(
    [
        "lift", "fill", "hangup", "walkaway", "refuse", "accept", "silent", "answer",
        "wait", "status", "price", "power-cycle", "customers", "help", "quit",
        "amount", "volume", "rate", "timeout", "random", "none", *WAIT_STATES,
        "0", "1", "15", "99", "100", "0x50", "0x6f", "0xZZ", "1.5", "-1", "1e9", "nan",
        "0.0000001", "999999999.999999", "9" * 40, "#", "", "\t", "\x00", "é", "١",
    ]
)  # fmt: skip


def _outcome(text: str) -> Command | str | None:
    try:
        return parse_command(text)
    except CommandSyntaxError as exc:
        assert exc.reply().startswith(f"error {exc.code} ")
        return exc.code


@given(st.text(max_size=MAX_LINE + 20))
def test_any_text_is_a_command_nothing_or_a_typed_error(text: str) -> None:
    _outcome(text)


@given(st.lists(_WORDS | st.text(max_size=6), max_size=8), st.sampled_from([" ", "\t", "  "]))
def test_any_sequence_of_likely_words_is_a_command_nothing_or_a_typed_error(
    words: list[str], blank: str
) -> None:
    _outcome(blank.join(words))


_AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999"), places=2)


@given(
    st.integers(1, 99),
    st.one_of(st.none(), _AMOUNTS),
    st.one_of(st.none(), st.decimals(min_value=1, max_value=1000, places=1)),
    st.one_of(st.none(), st.decimals(min_value=0, max_value=86400, places=3)),
)
def test_a_written_fill_reads_back_the_same(
    pump: int, amount: Decimal | None, rate: Decimal | None, wait: Decimal | None
) -> None:
    text = f"fill {pump}"
    text += f" amount {amount}" if amount is not None else ""
    text += f" rate {rate}" if rate is not None else ""
    text += f" wait {wait}" if wait is not None else ""
    assert parse_command(text) == Fill(
        PumpRef(number=pump), amount=amount, rate_l_per_min=rate, wait_s=wait
    )
