"""Money rules, written once.

- Amounts are `Decimal`, never float; the database columns are NUMERIC(18,4).
- Ledger precision is 0.0001 (a hundredth of a cent) in the system currency EUR.
- Every computed amount (call cost, currency conversion) is rounded once, at the end,
  ROUND_HALF_UP to that precision (`quantize_money`). Intermediate products stay exact.
- A reservation for a call rounds UP (`quantize_money_up`) so it always covers the charge.
- Display amounts (user currency) are the ledger amount × eur_course, rounded the same way.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

MONEY_QUANT = Decimal("0.0001")
ZERO = Decimal("0")


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


def quantize_money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANT, rounding=ROUND_HALF_UP)


def quantize_money_up(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANT, rounding=ROUND_CEILING)


def format_money(amount: Decimal) -> str:
    """Wire form of an amount: fixed 4 decimals, e.g. '0.1500', '-2.0000', '0' for zero."""
    q = quantize_money(amount)
    if q == ZERO:
        return "0"
    return f"{q:f}"


def to_display(amount_eur: Decimal, eur_course: Decimal) -> Decimal:
    """EUR amount in a user's currency (eur_course = units of that currency per 1 EUR)."""
    return quantize_money(amount_eur * eur_course)


def from_display(amount: Decimal, eur_course: Decimal) -> Decimal:
    """An amount in a user's currency converted to EUR."""
    if eur_course <= ZERO:
        raise ValueError("eur_course must be positive")
    return quantize_money(amount / eur_course)
