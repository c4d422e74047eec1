"""API methods: bans (spec section "Data security"); rules in billing_core.asterisk.bans
and billing_core.directory.bans.

Below administrator level (getBans, flushBans at 22) a user sees and flushes the bans of
its Asterisk servers only (those its and its users' SIP accounts name), and the whitelist.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from billing_core.asterisk import bans as server_bans
from billing_core.catalog.params import Bool, Int, NoParams, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext
from billing_core.clock import as_utc, wire_time
from billing_core.directory.bans import WHITELIST
from billing_core.directory.context import DirectoryContext
from billing_core.directory.ownership import is_admin
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.records import UserRecord


async def _scope(ctx: CallContext[DirectoryContext], actor: UserRecord) -> list[str] | None:
    """The sources `actor` may see and flush; None: every one (administrators)."""
    if is_admin(actor):
        return None
    async with ctx.services.db.begin() as conn:
        return await server_bans.servers_of(conn, actor.username)


@REGISTRY.method(
    "getBans",
    level=22, params=NoParams, returns="json",
    aliases=Aliases(vcs=("bans.list",), billmgr=("ban",), elid="id"),
)
async def get_bans(ctx: CallContext[DirectoryContext], p: NoParams) -> list[dict[str, Any]]:
    actor = ctx.require_actor()
    rows = await ctx.services.bans.list(await _scope(ctx, actor))
    async with ctx.services.db.begin() as conn:
        hours = (await conn.execute(select(users.c.timezone).where(users.c.id == actor.id))).scalar()
    offset = timedelta(hours=float(Decimal(hours or 0)))  # a display shift, not money
    return [_ban(row, offset) for row in rows]


def _ban(row: dict[str, Any], offset: timedelta) -> dict[str, Any]:
    created = as_utc(datetime.fromisoformat(row["created_at"]))
    return {
        "id": row["id"],
        "source": row["source"],
        "target": row["ip"],
        "reason": row["reason"],
        "date": wire_time(created),
        "clientdate": wire_time(None if created is None else created + offset),
        "permanent": row["expires_at"] is None,
    }


class BanIPParams(Params):
    source: Str
    target: Str
    reason: Str = ""


@REGISTRY.method(
    "banIP",
    level=33, params=BanIPParams, returns="bool",
    aliases=Aliases(vcs=("bans.add",), billmgr=("ban.edit#create",)),
)
async def ban_ip(ctx: CallContext[DirectoryContext], p: BanIPParams) -> bool:
    """`source=whitelist` adds a whitelist entry (an address or a network); any other source
    names the Asterisk server whose firewall should block `target`."""
    if p.source.strip().lower() == WHITELIST:
        await ctx.services.bans.allow(server_bans.target_address(p.target, mask=True), reason=p.reason)
        return True
    target = server_bans.target_address(p.target, mask=False)
    async with ctx.services.db.begin() as conn:
        source = await server_bans.source_server(conn, p.source)
    if not await ctx.services.bans.ban(target, reason=p.reason, source=source, gens=ctx.generations):
        raise ApiError(ErrorCode.E_TARGET_WHITELISTED, f"{target} is whitelisted")
    return True


class BanIdParams(Params):
    id: Int


@REGISTRY.method(
    "unbanIP",
    level=33, params=BanIdParams, returns="bool",
    aliases=Aliases(vcs=("bans.delete",), billmgr=("ban.delete",), elid="id"),
)
async def unban_ip(ctx: CallContext[DirectoryContext], p: BanIdParams) -> bool:
    if not await ctx.services.bans.remove(p.id):
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such ban")
    return True


class BanPermanentParams(Params):
    id: Int
    state: Bool


@REGISTRY.method("updateBanPermanent", level=33, params=BanPermanentParams, returns="bool")
async def update_ban_permanent(ctx: CallContext[DirectoryContext], p: BanPermanentParams) -> bool:
    if not await ctx.services.bans.set_permanent(p.id, p.state):
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such ban")
    return True


@REGISTRY.method("flushBans", level=22, params=NoParams, returns="bool")
async def flush_bans(ctx: CallContext[DirectoryContext], p: NoParams) -> bool:
    """The bans of the acting user's servers (an administrator's: of every server); the
    whitelist stays."""
    await ctx.services.bans.flush(await _scope(ctx, ctx.require_actor()))
    return True


@REGISTRY.method("flushAllBans", level=33, params=NoParams, returns="bool")
async def flush_all_bans(ctx: CallContext[DirectoryContext], p: NoParams) -> bool:
    await ctx.services.bans.flush(None)
    return True
