"""API methods: DISA login (authorizeCall). Logic lives in billing_core.calls.disa."""

from __future__ import annotations

from billing_core.calls import disa
from billing_core.catalog.params import Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext, TextAnswer
from billing_core.ledger.context import LedgerContext


class AuthorizeCallParams(Params):
    callerid: Str
    auth: Str


@REGISTRY.method("authorizeCall", level=50, params=AuthorizeCallParams, returns="text")
async def authorize_call(ctx: CallContext[LedgerContext], p: AuthorizeCallParams) -> TextAnswer:
    verdict = await disa.authorize(
        ctx.services, ctx.generations, key_owner=ctx.key.owner, callerid=p.callerid, auth=p.auth
    )
    if verdict.extension is not None:
        return TextAnswer(
            text=verdict.extension, result="Allowed", fields={"CALLGATE_EXTENSION": verdict.extension}
        )
    code = verdict.error.value if verdict.error is not None else "E_AUTH_FAILED"
    return TextAnswer(text=f"Declined {code}", result="Declined", ok=False, error=code)
