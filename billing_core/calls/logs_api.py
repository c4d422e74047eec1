"""API methods: the call log (getLogs, deleteLogs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from billing_core.calls import cdr_log
from billing_core.catalog.params import Bool, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext
from billing_core.directory import ownership
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning.users_api import caller_of


class GetLogsParams(Params):
    limit: Annotated[int, Field(ge=1, le=cdr_log.MAX_LIMIT)] = 100
    only_completed: Bool = False
    resolve_info: Bool = False
    user: Str | None = None  # a user the caller reaches; default: the actor


class DeleteLogsParams(Params):
    user: Str | None = None  # a user the caller reaches; default: the actor


@REGISTRY.method(
    "getLogs",
    level=1, params=GetLogsParams, returns="json",
    aliases=Aliases(vcs=("xdrs.list",), billmgr=("xdr",)),
)
async def get_logs(ctx: CallContext[LedgerContext], p: GetLogsParams) -> list[dict[str, Any]]:
    if p.user:
        subject = await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller_of(ctx), p.user)
    else:
        subject = ctx.require_actor()
    return await cdr_log.call_log(
        ctx.services,
        ctx.generations,
        subject,
        limit=p.limit,
        only_completed=p.only_completed,
        resolve_info=p.resolve_info,
    )


@REGISTRY.method("deleteLogs", level=1, params=DeleteLogsParams, returns="bool")
async def delete_logs(ctx: CallContext[LedgerContext], p: DeleteLogsParams) -> bool:
    """Hides the user's call log from getLogs; the CDR rows stay, and with them the unique
    (call_uid, prior) that makes a retried callFinish replay instead of charging again."""
    if p.user:
        subject = await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller_of(ctx), p.user)
    else:
        subject = ctx.require_actor()
    await cdr_log.hide_log(ctx.services, subject, by=caller_of(ctx).username)
    return True
