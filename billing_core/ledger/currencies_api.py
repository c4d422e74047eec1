"""API methods: currencies (getCurrencies, getCourse); anonymous (level 0)."""

from __future__ import annotations

from typing import Any

from billing_core.catalog.params import NoParams, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext
from billing_core.ledger import currency as currency_svc
from billing_core.ledger.context import LedgerContext


class GetCourseParams(Params):
    currency: Str


@REGISTRY.method(
    "getCurrencies",
    level=0, params=NoParams, returns="json",
    aliases=Aliases(vcs=("currencies.list",), billmgr=("currency",)),
)
async def get_currencies(ctx: CallContext[LedgerContext], p: NoParams) -> list[dict[str, Any]]:
    found = await currency_svc.all_currencies(ctx.services, ctx.generations)
    return [currency_svc.course_json(cur, full=False) for cur in found.values()]


@REGISTRY.method("getCourse", level=0, params=GetCourseParams, returns="json")
async def get_course(ctx: CallContext[LedgerContext], p: GetCourseParams) -> dict[str, Any]:
    cur = await currency_svc.currency(ctx.services, ctx.generations, p.currency)
    return currency_svc.course_json(cur, full=True)
