"""The CLI's table renderer and address parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from umbra.table import ELLIPSIS, Column, clean, render_table

from collector.addr import format_addr, is_loopback_host, parse_addr

COLS = (Column("NAME", flex=True), Column("N", align="right"), Column("NOTE", flex=True, weight=3.0))


def test_natural_width_when_it_fits() -> None:
    out = render_table(COLS, [("alpha", 1, "short"), ("b", 22, "x")], width=100).splitlines()
    assert out[0].split() == ["NAME", "N", "NOTE"]
    assert out[1].startswith("alpha") and "short" in out[1]
    assert out[2].index("22") + 2 == out[1].index("1") + 1  # right-aligned numbers end together


def test_shrinks_flexible_columns_with_ellipsis() -> None:
    rows = [("a" * 40, 7, "n" * 80)]
    out = render_table(COLS, rows, width=60).splitlines()
    assert all(len(line) <= 60 for line in out)
    assert ELLIPSIS in out[1]
    name, note = out[1].split()[0], out[1].split()[2]
    assert len(note) > len(name)  # the heavier column kept more


def test_max_width_caps_a_column() -> None:
    out = render_table([Column("A", max_width=5), Column("B")], [("abcdefgh", "z")], width=100)
    assert out.splitlines()[1].startswith("abcd" + ELLIPSIS)


def test_control_characters_are_neutralised() -> None:
    assert clean("evil\x1b[2Jtext\nnext") == "evil?[2Jtext next"
    out = render_table([Column("X")], [("a\x07b",)], width=20)
    assert "\x07" not in out


@given(
    st.lists(st.tuples(st.text(max_size=50), st.integers(), st.text(max_size=120)), max_size=8),
    st.integers(40, 200),
)
def test_never_wider_than_asked(rows: list[tuple[str, int, str]], width: int) -> None:
    out = render_table(COLS, rows, width=width)
    assert all(len(line) <= width for line in out.splitlines())
    assert len(out.splitlines()) == len(rows) + 1


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:8080", ("localhost", 8080)),
    ],
)
def test_parse_addr(text: str, parsed: tuple[str, int]) -> None:
    assert parse_addr(text) == parsed
    assert parse_addr(format_addr(*parsed)) == parsed


@pytest.mark.parametrize("text", ["", "50051", ":50051", "host:", "host:http", "::1:5", "h:70000"])
def test_parse_addr_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(text)


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("example.org")
