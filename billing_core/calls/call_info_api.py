"""API methods of the spec's "Call processing" section that decide nothing:
resolveCallerid (deprecated) and getTextBalance (the balance for Playback()).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from billing_core.calls import text_balance
from billing_core.catalog.params import Amount, NoParams, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext, TextAnswer
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency, currency_or_system
from billing_core.ledger.tables import accounts
from billing_core.provisioning import user_info


@REGISTRY.method("resolveCallerid", level=0, params=NoParams, returns="text")
async def resolve_callerid(ctx: CallContext[LedgerContext], p: NoParams) -> TextAnswer:
    """The spec: "DEPRECATED: Use getValue?property=sip_callerid", and that is what it
    answers (the user's first SIP account's caller ID; E_NOT_EXIST without one). Anonymous
    in the spec (level 0), but it names the current user, so it needs one (E_AUTH_FAILED)."""
    actor = ctx.require_actor()
    obj = await user_info.user_object(ctx.services, ctx.generations, ctx.user, actor)
    return TextAnswer(text=user_info.user_value(obj, "sip_callerid"))


class GetTextBalanceParams(Params):
    """The spec lists two arguments named `balance`; the second, a string described as
    "currency (if not specified, use user currency)", is `currency` here."""

    balance: Amount | None = None
    currency: Str | None = None


@REGISTRY.method("getTextBalance", level=50, params=GetTextBalanceParams, returns="text")
async def get_text_balance(ctx: CallContext[LedgerContext], p: GetTextBalanceParams) -> TextAnswer:
    """`balance` as given, in `currency` (default: the user's); without it the user's
    account balance, converted from EUR to that currency. An unknown `currency` is
    E_NOT_EXIST. Over FastAGI: CALLGATE_RESULT=OK, CALLGATE_ANSWER = the list."""
    services, user = ctx.services, ctx.require_actor()
    if p.currency:
        cur = await currency(services, ctx.generations, p.currency)
    else:
        cur = await currency_or_system(services, ctx.generations, user.currency)
    amount = p.balance
    if amount is None:
        async with services.db.begin() as conn:
            balance = (await conn.execute(select(accounts.c.balance).where(accounts.c.id == user.account_id))).scalar()
        amount = cur.to_display(Decimal(balance or 0))
    return TextAnswer(text=text_balance.sound_names(amount, cur.code), result="OK")
