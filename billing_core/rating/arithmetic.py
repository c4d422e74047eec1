"""The pure arithmetic of rating: billed seconds, a call's cost, its hold and the longest
call an amount pays for. No I/O; property-tested in tests/test_rating_properties.py.

Apart from billing_core.rating.engine (which finds the tariff entry a call is rated at)
so that it reads in one sitting; rating re-exports these names. The rules are written out
in docs/billing.md ("Arithmetic").
"""

from __future__ import annotations

from decimal import Decimal

from billing_core.money import ZERO, quantize_money, quantize_money_up

__all__ = ["SECONDS_PER_MINUTE", "billed_seconds", "call_cost", "max_call_time", "reserve_amount"]

SECONDS_PER_MINUTE = 60


def billed_seconds(length_s: int, *, step: int, free_threshold: int) -> int:
    """Seconds charged for a call of `length_s`: 0 up to the free threshold, else whole steps."""
    if length_s <= 0 or length_s <= free_threshold:
        return 0
    return -(-length_s // step) * step


def _exact_cost(billed_s: int, price_per_minute: Decimal, connect_fee: Decimal) -> Decimal:
    if billed_s <= 0:
        return ZERO
    return price_per_minute * billed_s / SECONDS_PER_MINUTE + connect_fee


def call_cost(billed_s: int, *, price_per_minute: Decimal, connect_fee: Decimal) -> Decimal:
    """The charge for `billed_s` seconds (the tariff's connect_fee included), rounded once, half up."""
    return quantize_money(_exact_cost(billed_s, price_per_minute, connect_fee))


def reserve_amount(billed_s: int, *, price_per_minute: Decimal, connect_fee: Decimal) -> Decimal:
    """The hold for `billed_s` seconds: the same cost rounded up, so it covers the charge."""
    return quantize_money_up(_exact_cost(billed_s, price_per_minute, connect_fee))


def max_call_time(
    *,
    price_per_minute: Decimal,
    connect_fee: Decimal,
    step: int,
    free_threshold: int,
    available: Decimal,
    cap_s: int,
) -> int | None:
    """The longest call (seconds) whose reserved cost fits in `available`, or None.

    Candidates are multiples of `step` up to `cap_s` rounded down to a step; a cap
    shorter than one step is used as it is (it bills one step). A cost of zero always
    fits. Cost grows with length, so a binary search over the step count is exact.
    """
    if step <= 0 or cap_s <= 0:
        return None

    def fits(length_s: int) -> bool:
        billed = billed_seconds(length_s, step=step, free_threshold=free_threshold)
        amount = reserve_amount(billed, price_per_minute=price_per_minute, connect_fee=connect_fee)
        return amount == ZERO or amount <= available

    if cap_s < step:
        return cap_s if fits(cap_s) else None
    high = cap_s // step
    if fits(high * step):
        return high * step
    low = 0  # invariant: low == 0 or fits(low·step); not fits(high·step)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle * step):
            low = middle
        else:
            high = middle
    return low * step if low > 0 else None
