"""Exact conversion between what humans type (``12.50``) and minor units (``1250``). No floats.

Only the edges (CLI, edge handlers) use this; the ledger itself only ever sees whole minor units.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pyapp.errors import InvalidRequest, invalid

_DECIMAL = re.compile(r"^\s*([0-9]{1,19})(?:\.([0-9]+))?\s*$")


def to_minor(text: str | Decimal | int, exponent: int, *, field: str = "amount") -> int:
    """``to_minor("12.50", 2) == 1250``; refuses more decimals than the currency has, signs and floats."""
    if isinstance(text, bool | float):
        raise invalid(field, "must be a decimal string such as 12.50, not a float")
    if isinstance(text, Decimal):  # bounded before it is written out: 1e-999999999 is 13 bytes, not 1 GB
        decimals = text.as_tuple().exponent  # "n", "N" or "F" for the non-finite
        if not text.is_finite() or not isinstance(decimals, int) or text.adjusted() > 19 or decimals < -40:
            raise invalid(field, "must be a positive decimal such as 12.50, of at most 19 digits and 40 decimals")
        text = format(text, "f")
    elif isinstance(text, str) and len(text) > 64:
        raise invalid(field, "must be a positive decimal such as 12.50 (at most 64 characters)")
    match = _DECIMAL.match(str(text))
    if not match:
        raise invalid(field, "must be a positive decimal such as 12.50")
    whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
    if len(fraction) > exponent:
        places = "no decimals" if exponent == 0 else f"at most {exponent} decimals"
        raise invalid(field, f"has {places} in this currency")
    value: int = int(whole) * 10**exponent + int((fraction or "0").ljust(exponent, "0") or "0")
    if value <= 0:
        raise invalid(field, "must be greater than zero")
    if value > 2**63 - 1:
        raise invalid(field, "is too large")
    return value


def format_minor(amount: int, exponent: int) -> str:
    """``format_minor(-1250, 2) == "-12.50"``."""
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


__all__ = ["InvalidRequest", "format_minor", "to_minor"]
