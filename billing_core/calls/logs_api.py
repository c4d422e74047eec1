"""API methods: the call log (getLogs, deleteLogs), and its CSV file form (getLogs.csv)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from billing_core.calls import cdr_export, cdr_log
from billing_core.catalog.params import Bool, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext, FileAnswer
from billing_core.directory import ownership
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning.users_api import caller_of
from billing_core.records import UserRecord


class GetLogsParams(Params):
    limit: Annotated[int, Field(ge=1, le=cdr_log.MAX_LIMIT)] = 100
    only_completed: Bool = False
    resolve_info: Bool = False
    user: Str | None = None  # a user the caller reaches; default: the actor


class DeleteLogsParams(Params):
    user: Str | None = None  # a user the caller reaches; default: the actor


async def _subject(ctx: CallContext[LedgerContext], user: str | None) -> UserRecord:
    """`user` if the caller reaches it (E_NOT_EXIST, E_DOES_NOT_BELONG_TO_YOU), else the actor."""
    if user:
        return await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller_of(ctx), user)
    return ctx.require_actor()


@REGISTRY.method(
    "getLogs",
    level=1, params=GetLogsParams, returns="json",
    aliases=Aliases(vcs=("xdrs.list",), billmgr=("xdr",)),
)
async def get_logs(ctx: CallContext[LedgerContext], p: GetLogsParams) -> list[dict[str, Any]]:
    subject = await _subject(ctx, p.user)
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
    subject = await _subject(ctx, p.user)
    await cdr_log.hide_log(ctx.services, subject, by=caller_of(ctx).username)
    return True


class ExportLogsParams(Params):
    """getLogs' filters for the CSV file; without `limit`, the whole log."""

    limit: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    only_completed: Bool = False
    resolve_info: Bool = False
    user: Str | None = None


@REGISTRY.file_form("getLogs", "csv", params=ExportLogsParams)
async def export_logs(ctx: CallContext[LedgerContext], p: ExportLogsParams) -> FileAnswer:
    subject = await _subject(ctx, p.user)
    return await cdr_export.export(
        ctx.services, ctx.generations, subject, limit=p.limit, only_completed=p.only_completed,
        resolve_info=p.resolve_info,
    )  # fmt: skip
