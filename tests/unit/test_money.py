from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.money import FEN_PER_WAN, MAX_FEN, MoneyError, fen_to_str, format_wan, to_fen


@pytest.mark.parametrize(
    ("value", "fen"),
    [("1500000.00", 150000000), ("0.01", 1), (12, 1200), (12.5, 1250), ("1,234.50", 123450),
     (Decimal("3.10"), 310), ("-20.00", -2000), (0.1, 10), (1234567.89, 123456789),
     ("1,234,567.89", 123456789), ("-1,000", -100000), ("999,999", 99999900)],
)
def test_amounts_become_exact_fen(value: object, fen: int) -> None:
    assert to_fen(value) == fen


def test_wan_amounts_scale_to_fen() -> None:
    assert to_fen("1.2345", per_unit=FEN_PER_WAN) == 1234500
    assert to_fen("150", per_unit=FEN_PER_WAN) == 150000000


@pytest.mark.parametrize("value", ["1.001", "abc", "", "NaN", "Infinity", True, None, [1],
                                   "1.00000000000000000000000000001", "1e-999999", "1e-999999999", "-1e-3",
                                   "1,50", "12,34,5", "1_0", ",100", "1,000,00", "1,0000"])
def test_what_is_not_whole_fen_is_refused_not_rounded(value: object) -> None:
    with pytest.raises(MoneyError):
        to_fen(value)


def test_formatting() -> None:
    assert fen_to_str(150000000) == "1500000.00"
    assert fen_to_str(-5) == "-0.05"
    assert fen_to_str(0) == "0.00"
    assert format_wan(150000000) == "150.00万元"


@pytest.mark.parametrize(
    "value", ["1e999999", "10000000000000", "-10000000000000", 10**13, 10**20, 1e20, "100000000000000000000"]
)
def test_amounts_of_ten_wan_yi_yuan_or_more_are_refused_with_the_unit_to_check(value: object) -> None:
    with pytest.raises(MoneyError, match="check the unit"):
        to_fen(value)


def test_the_bound_is_just_below_ten_wan_yi_yuan_in_either_unit() -> None:
    assert to_fen("9999999999999.99") == MAX_FEN - 1
    assert to_fen("-9999999999999.99") == -(MAX_FEN - 1)
    assert to_fen("999999999.999999", per_unit=FEN_PER_WAN) == MAX_FEN - 1
    with pytest.raises(MoneyError, match="万元"):
        to_fen("1000000000", per_unit=FEN_PER_WAN)


@given(st.integers(min_value=1 - MAX_FEN, max_value=MAX_FEN - 1))
def test_fen_to_str_is_the_exact_yuan_amount(fen: int) -> None:
    text = fen_to_str(fen)
    assert Decimal(text) == Decimal(fen) / 100 and text == f"{Decimal(fen) / 100:.2f}"
    assert to_fen(text) == fen
