"""Exact money: the ledger counts in fen (分, 1/100 yuan) as Python ints.

Treasury payments are settled to the fen, so an integer count of fen is exact
and an order of magnitude faster than Decimal on the hot path.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

FEN_PER_YUAN = 100
FEN_PER_QIAN = 100_000  # 千元
FEN_PER_WAN = 1_000_000  # 万元
FEN_PER_YI = 10_000_000_000  # 亿元
# No single amount reaches 10 万亿元 (a province's whole budget is a few 万亿): a larger
# one is a unit or typing error. The bound also keeps every stored sum a 64-bit integer.
MAX_FEN = 10**15


_GROUPED = re.compile(r"[-+]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")


class MoneyError(ValueError):
    """An amount that is not an exact number of fen."""


def to_fen(value: object, *, per_unit: int = FEN_PER_YUAN) -> int:
    """Parse a yuan (or, with ``per_unit=FEN_PER_WAN``, 万元) amount into fen.

    Accepts a decimal string ("1500000.00"), an int or a float (taken by its
    shortest repr, which is what the JSON text said). Rejects anything that is
    not a whole number of fen rather than silently rounding money.
    """
    if isinstance(value, bool):
        raise MoneyError("amount must be a number or a decimal string, not a boolean")
    if isinstance(value, int):
        return _bounded(value * per_unit, value, "万元" if per_unit == FEN_PER_WAN else "yuan")
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise MoneyError("amount is empty")
        if "," in text:
            # Thousands separators only (1,234,567.89): "1,50" is a typo, not 150 yuan.
            if not _GROUPED.fullmatch(text):
                raise MoneyError(f"amount {value!r}: commas may only separate thousands (1,234,567.89)")
            text = text.replace(",", "")
        if "_" in text:  # Decimal would read "1_0" as 10
            raise MoneyError(f"amount {value!r} is not a decimal number")
    elif isinstance(value, Decimal):
        text = str(value)
    else:
        raise MoneyError(f"amount must be a number or a decimal string, got {type(value).__name__}")
    try:
        exact = Decimal(text)
    except InvalidOperation:
        raise MoneyError(f"amount {value!r} is not a decimal number") from None
    if not exact.is_finite():
        raise MoneyError(f"amount {value!r} is not a finite number")
    unit = "万元" if per_unit == FEN_PER_WAN else "yuan"
    # Checked before multiplying: "1e999999" would overflow the decimal context, and
    # "1e-999999999" underflow it to a silent 0.
    if exact and exact.adjusted() >= 15:
        raise _too_large(value, unit)
    if exact and exact.adjusted() < -(len(str(per_unit)) - 1):  # under one fen, yet not 0
        raise MoneyError(f"amount {value!r} ({unit}) is not a whole number of fen (分)")
    # Exact: the default 28 digits would round "1.000…0001" (30 digits) to whole fen.
    with localcontext(prec=len(exact.as_tuple().digits) + 10):
        fen = exact * per_unit
    if fen != fen.to_integral_value():
        raise MoneyError(f"amount {value!r} ({unit}) is not a whole number of fen (分)")
    return _bounded(int(fen), value, unit)


def _bounded(fen: int, value: object, unit: str) -> int:
    if -MAX_FEN < fen < MAX_FEN:
        return fen
    raise _too_large(value, unit)


def _too_large(value: object, unit: str) -> MoneyError:
    return MoneyError(
        f"amount {value!r} ({unit}) is 10 万亿元 or more: check the unit (元 or 万元) and the digits"
    )


def fen_to_str(fen: int) -> str:
    """Format fen as a yuan decimal string with two places: 150000 -> "1500.00"."""
    # Slicing the digits: twice as fast as divmod and a format spec, and this runs
    # for every amount of every alert transition.
    if fen < 0:
        return "-" + fen_to_str(-fen)
    if fen < 100:
        return ("0.0" if fen < 10 else "0.") + str(fen)
    digits = str(fen)
    return digits[:-2] + "." + digits[-2:]


def format_wan(fen: int) -> str:
    """Human Chinese display in 万元 with two decimals: 1500000000 -> "1500.00万元"."""
    return f"{fen / FEN_PER_WAN:,.2f}万元"


def money_rate(paid: int, budget: int) -> float | None:
    """paid / budget (in fen) to six decimals, cut toward minus infinity, exactly.

    Rounded, 29,999,999.99 of 100,000,000 read 0.3 — equal to the 30% floor it broke,
    so a script testing ``< 0.3`` disagreed with the alert. Integer division never
    lifts a rate onto a threshold of six decimals or fewer."""
    return (paid * 1_000_000 // budget) / 1_000_000 if budget > 0 else None
