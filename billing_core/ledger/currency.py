"""Currencies: the `currencies` rows, read through the cache (NS_RATING), and the
conversions between the ledger (EUR) and a user's display currency.

`eur_course` is "units of that currency per 1 EUR" (billing_core.money). A currency's
`transfer_fee` is a fixed amount in that currency, charged per transferMoney.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from billing_core.cache.keys import NS_RATING
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.money import from_display, money_json, to_display
from billing_core.rating.tables import currencies

Generations = dict[str, int] | None


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    eur_course: Decimal
    displayname: str
    transfer_fee: Decimal
    referral_reward: Decimal

    @property
    def sign(self) -> str:
        """What the spec calls displaycurrency ("chosen currency (sign)")."""
        return self.displayname or self.code

    def to_display(self, amount_eur: Decimal) -> Decimal:
        return to_display(amount_eur, self.eur_course)

    def to_eur(self, amount: Decimal) -> Decimal:
        return from_display(amount, self.eur_course)

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "eur_course": str(self.eur_course),
            "displayname": self.displayname,
            "transfer_fee": str(self.transfer_fee),
            "referral_reward": str(self.referral_reward),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Currency:
        return cls(
            code=data["code"],
            eur_course=Decimal(data["eur_course"]),
            displayname=data["displayname"],
            transfer_fee=Decimal(data["transfer_fee"]),
            referral_reward=Decimal(data["referral_reward"]),
        )


def plain_number(value: Decimal) -> Decimal:
    """A course without its storage padding (68.917000 -> 68.917), never in exponent form."""
    normalized = value.normalize()
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        normalized = normalized.quantize(Decimal(1))
    return normalized


async def all_currencies(services: LedgerContext, gens: Generations) -> dict[str, Currency]:
    """Every currency by code (cached: courses change only through the rating methods)."""

    async def load() -> list[dict[str, str]]:
        async with services.db.begin() as conn:
            rows = (await conn.execute(select(currencies).order_by(currencies.c.currency))).all()
        return [
            Currency(
                code=row.currency,
                eur_course=Decimal(row.eur_course),
                displayname=row.displayname,
                transfer_fee=Decimal(row.transfer_fee),
                referral_reward=Decimal(row.referral_reward),
            ).to_json()
            for row in rows
        ]

    found = await services.cache.lookup(
        gens,
        NS_RATING,
        "currencies",
        load,
        decode=lambda data: [Currency.from_json(d) for d in data],
        encode=lambda records: [r.to_json() for r in records],
    )
    return {c.code: c for c in found or []}


async def currency(services: LedgerContext, gens: Generations, code: str) -> Currency:
    """One currency; an unknown code is E_NOT_EXIST."""
    found = (await all_currencies(services, gens)).get(code.upper())
    if found is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"no such currency: {code[:8]}")
    return found


async def currency_or_system(services: LedgerContext, gens: Generations, code: str) -> Currency:
    """A user's currency; a code that vanished from the table falls back to EUR at 1:1."""
    found = (await all_currencies(services, gens)).get(code)
    if found is not None:
        return found
    system = services.settings.system_currency
    return (await all_currencies(services, gens)).get(system) or Currency(
        system, Decimal(1), system, Decimal(0), Decimal(0)
    )


def course_json(cur: Currency, *, full: bool) -> dict[str, Any]:
    """getCurrencies shows course, code and sign; getCourse adds the fee and the reward."""
    data: dict[str, Any] = {
        "eur_course": plain_number(cur.eur_course),
        "currency": cur.code,
        "displayname": cur.displayname,
    }
    if full:
        data["transfer_fee"] = money_json(cur.transfer_fee)
        data["referral_reward"] = money_json(cur.referral_reward)
    return data
