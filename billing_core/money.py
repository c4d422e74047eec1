"""Money rules, written once.

- Amounts are `Decimal`, never float; the database columns are NUMERIC(18,4).
- Ledger precision is 0.0001 (a hundredth of a cent) in the system currency EUR.
- Every computed amount (call cost, currency conversion) is rounded once, at the end,
  ROUND_HALF_UP to that precision (`quantize_money`). Intermediate products stay exact.
- A reservation for a call rounds UP (`quantize_money_up`) so it always covers the charge.
- Display amounts (user currency) are the ledger amount × eur_course, rounded the same way.
- An amount in an answer (HTTP JSON number or text, FastAGI variable) is written one way,
  by `format_money` (JSON: `money_json`, the same digits as a number): rounded half-up to
  0.0001, then at least two decimals and at most four, trailing zeros beyond the second
  dropped: 1.00, 0.00, 119.965, 0.0125, -2.50.
- An amount on the wire is plain ASCII decimal notation with at most 4 decimals and at
  most 14 integer digits (what NUMERIC(18,4) holds); anything else (exponents, more
  decimals, other scripts' digits, which `Decimal()` would accept) is refused, never
  rounded (`parse_amount`).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

MONEY_QUANT = Decimal("0.0001")
CENT = Decimal("0.01")  # the fewest decimals an answer shows (the spec's getValue: 1.00)
ZERO_CENTS = Decimal("0.00")
ZERO = Decimal("0")
MONEY_LIMIT = Decimal("1e14")  # NUMERIC(18,4): every stored amount is strictly below this

# [0-9], not \d: \d also matches Arabic-Indic and other scripts' digits.
_AMOUNT_RE = re.compile(r"[+-]?[0-9]{1,14}(\.[0-9]{0,4})?|[+-]?\.[0-9]{1,4}", re.ASCII)
_NUMBER_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


class LossyMoneyError(TypeError):
    """Raised when a float meets money."""


def to_money(value: object) -> Decimal:
    """Parse an amount from a wire string, int or Decimal; refuse floats."""
    if isinstance(value, float):
        raise LossyMoneyError("money must not be a float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"not an amount: {value!r}") from exc
    else:
        raise TypeError(f"not an amount: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return result


def parse_amount(value: object) -> Decimal:
    """An amount from the wire (see the module rules): ValueError when it is not one."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        result = Decimal(value)
        if not result.is_finite() or result != quantize_money(result) or abs(result) >= MONEY_LIMIT:
            raise ValueError("an amount has at most 4 decimals and 14 integer digits")
        return result
    if not isinstance(value, str):
        raise ValueError(f"not an amount: {value!r}")
    text = value.strip()
    if not _AMOUNT_RE.fullmatch(text):
        raise ValueError("an amount is plain decimal digits with at most 4 decimals and 14 integer digits")
    return Decimal(text)


def parse_number(value: object) -> Decimal:
    """A non-money `num` (multiplier, time zone, seconds): ASCII decimal notation, an
    exponent allowed (its size is bounded by the field's max_digits)."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Decimal(value)
    if not isinstance(value, str) or not _NUMBER_RE.fullmatch(value.strip()):
        raise ValueError("a number is decimal digits 0-9 (one '.', an optional exponent)")
    return Decimal(value.strip())


def check_storable(amount: Decimal) -> None:
    """ValueError when `amount` does not fit the ledger's NUMERIC(18,4)."""
    if abs(amount) >= MONEY_LIMIT:
        raise ValueError("amount beyond what the ledger stores (|amount| < 1e14)")


def quantize_money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANT, rounding=ROUND_HALF_UP)


def quantize_money_up(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANT, rounding=ROUND_CEILING)


def money_json(amount: Decimal) -> Decimal:
    """An amount as answers show it (see the module rules): 5.0000 -> 5.00, 119.9650 ->
    119.965, 0 -> 0.00. A Decimal, so that JSON writes it as a number with exactly these
    digits (simplejson's use_decimal writes str(), which this exponent never puts in
    exponent notation)."""
    q = quantize_money(amount)
    if q == ZERO:
        return ZERO_CENTS  # also for -0.0000: never "-0.00"
    cents = q.quantize(CENT)
    # A third or fourth decimal that is not zero stays: normalize() drops only trailing zeros,
    # and with a non-zero decimal digit its exponent stays negative (no "1E+2").
    return cents if cents == q else q.normalize()


def format_money(amount: Decimal) -> str:
    """The text of an amount in an answer (getValue, callFinish, CALLGATE_COST): money_json's digits."""
    return f"{money_json(amount):f}"


def to_display(amount_eur: Decimal, eur_course: Decimal) -> Decimal:
    """EUR amount in a user's currency (eur_course = units of that currency per 1 EUR)."""
    return quantize_money(amount_eur * eur_course)


def from_display(amount: Decimal, eur_course: Decimal) -> Decimal:
    """An amount in a user's currency converted to EUR."""
    if eur_course <= ZERO:
        raise ValueError("eur_course must be positive")
    return quantize_money(amount / eur_course)
