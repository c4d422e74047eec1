"""Properties of the rating arithmetic (pure functions, no database)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.money import MONEY_QUANT, quantize_money
from billing_core.rating.engine import billed_seconds, call_cost, max_call_time, reserve_amount

money = st.decimals(min_value=Decimal("0"), max_value=Decimal("5"), places=4)
prices = st.one_of(st.just(Decimal(0)), money, st.decimals(min_value=Decimal("0"), max_value=Decimal("3"), places=10))
steps = st.sampled_from([1, 6, 10, 30, 60, 61])
thresholds = st.integers(min_value=0, max_value=120)
availables = st.decimals(min_value=Decimal("-2"), max_value=Decimal("50"), places=4)
caps = st.integers(min_value=1, max_value=14400)


def _reserve(length_s: int, price: Decimal, fee: Decimal, step: int, threshold: int) -> Decimal:
    billed = billed_seconds(length_s, step=step, free_threshold=threshold)
    return reserve_amount(billed, price_per_minute=price, connect_fee=fee)


def _fits(amount: Decimal, available: Decimal) -> bool:
    return amount == 0 or amount <= available


@settings(max_examples=300, deadline=None)
@given(price=prices, fee=money, step=steps, threshold=thresholds, available=availables, cap=caps)
def test_max_call_time_is_the_longest_affordable(
    price: Decimal, fee: Decimal, step: int, threshold: int, available: Decimal, cap: int
) -> None:
    found = max_call_time(
        price_per_minute=price,
        connect_fee=fee,
        step=step,
        free_threshold=threshold,
        available=available,
        cap_s=cap,
    )
    effective_cap = cap if cap < step else cap // step * step
    if found is None:
        # not even the shortest candidate fits
        assert not _fits(_reserve(min(step, effective_cap), price, fee, step, threshold), available)
        return
    assert 0 < found <= effective_cap
    assert found == effective_cap or found % step == 0
    assert _fits(_reserve(found, price, fee, step, threshold), available)
    if found + step <= effective_cap:  # not capped: one more step does not fit
        assert not _fits(_reserve(found + step, price, fee, step, threshold), available)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(min_value=0, max_value=20000), step=steps, threshold=thresholds)
def test_billed_seconds_are_whole_steps_covering_the_call(length: int, step: int, threshold: int) -> None:
    billed = billed_seconds(length, step=step, free_threshold=threshold)
    if length <= threshold or length == 0:
        assert billed == 0
    else:
        assert billed % step == 0
        assert length <= billed < length + step


@settings(max_examples=300, deadline=None)
@given(billed=st.integers(min_value=0, max_value=20000), price=prices, fee=money)
def test_charge_is_rounded_once_and_never_exceeds_the_hold(billed: int, price: Decimal, fee: Decimal) -> None:
    charged = call_cost(billed, price_per_minute=price, connect_fee=fee)
    held = reserve_amount(billed, price_per_minute=price, connect_fee=fee)
    assert charged == quantize_money(charged) and held == quantize_money(held)
    assert charged <= held <= charged + MONEY_QUANT
    if billed == 0:
        assert charged == 0 == held
    else:
        exact = price * billed / 60 + fee
        assert abs(charged - exact) <= MONEY_QUANT / 2


@settings(max_examples=200, deadline=None)
@given(a=st.integers(min_value=0, max_value=7200), b=st.integers(min_value=0, max_value=7200), step=steps,
       threshold=thresholds, price=prices, fee=money)  # fmt: skip
def test_cost_grows_with_length(a: int, b: int, step: int, threshold: int, price: Decimal, fee: Decimal) -> None:
    short, long = sorted((a, b))
    cost_short = call_cost(
        billed_seconds(short, step=step, free_threshold=threshold), price_per_minute=price, connect_fee=fee
    )
    cost_long = call_cost(
        billed_seconds(long, step=step, free_threshold=threshold), price_per_minute=price, connect_fee=fee
    )
    assert cost_short <= cost_long
