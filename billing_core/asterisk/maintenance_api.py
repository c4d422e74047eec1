"""API methods of the spec's "Technical maintenance" that act on an Asterisk server:
asteriskRequest (billing_core.asterisk.requests: an allow-list of AMI actions),
updateDialplan, restoreDialplan, updateInterface (billing_core.asterisk.files: versions
fetched from allowed URLs only, reloaded with AMI's Reload action).

`asterisk` names the server by its address (the spec's word), its name or one of its
sip_server names; none: E_SIP_SERVER_NOT_EXIST. Below administrator level, a user may
only ask the servers its and its users' SIP accounts name (E_DOES_NOT_BELONG_TO_YOU).
"""

from __future__ import annotations

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.asterisk import bans as server_bans
from billing_core.asterisk import files
from billing_core.asterisk.context import AsteriskContext
from billing_core.asterisk.requests import asterisk_request
from billing_core.asterisk.tables import asterisk_servers, asterisk_sip_servers
from billing_core.catalog.params import Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.directory.ownership import is_admin
from billing_core.errors import ApiError, ErrorCode


async def server_named(conn: AsyncConnection, asterisk: str) -> str:
    """The server `asterisk` names: by name first; else by address or sip_server name, and
    of several servers at one address (`local` and a real one at 127.0.0.1) the one with
    AMI, then the oldest."""
    wanted = asterisk.strip().lower()
    by_name = func.lower(asterisk_servers.c.name) == wanted
    query = (
        select(asterisk_servers.c.name)
        .select_from(asterisk_servers.outerjoin(asterisk_sip_servers))
        .where(or_(by_name, func.lower(asterisk_servers.c.address) == wanted, asterisk_sip_servers.c.name == wanted))
        .order_by(
            case((by_name, 0), else_=1),
            case((asterisk_servers.c.ami_user != "", 0), else_=1),
            asterisk_servers.c.id,
        )
        .limit(1)
    )
    name = (await conn.execute(query)).scalar()
    if name is None:
        raise ApiError(ErrorCode.E_SIP_SERVER_NOT_EXIST, "asterisk names no Asterisk server")
    return str(name)


async def named_server(ctx: CallContext[AsteriskContext], asterisk: str) -> str:
    """The server `asterisk` names, if the acting user may act on it."""
    actor = ctx.require_actor()
    async with ctx.services.db.begin() as conn:
        server = await server_named(conn, asterisk)
        if not is_admin(actor) and server not in await server_bans.servers_of(conn, actor.username):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "no SIP account of yours is on this Asterisk server")
    return server


class AsteriskRequestParams(Params):
    asterisk: Str
    destination: Str
    process: Str
    params: Str = ""


@REGISTRY.method("asteriskRequest", level=22, params=AsteriskRequestParams, returns="text")
async def asterisk_request_method(ctx: CallContext[AsteriskContext], p: AsteriskRequestParams) -> str:
    server = await named_server(ctx, p.asterisk)
    return await asterisk_request(ctx.services.ami, server, p.destination, p.process, p.params)


class FileParams(Params):
    asterisk: Str
    url: Str


@REGISTRY.method("updateDialplan", level=33, params=FileParams, returns="text")
async def update_dialplan(ctx: CallContext[AsteriskContext], p: FileParams) -> str:
    """Fetch the dialplan from an allowed URL, keep it as the server's next version, make it
    active and reload the dialplan over AMI: `OK <version>`."""
    server = await named_server(ctx, p.asterisk)
    prefixes = ctx.services.settings.dialplan_url_prefixes
    made = await files.update_file(ctx.services.ami, ctx.services.db, server, files.DIALPLAN, p.url, prefixes)
    return f"OK {made.version}"


class RestoreParams(Params):
    asterisk: Str = ""


@REGISTRY.method("restoreDialplan", level=33, params=RestoreParams, returns="text")
async def restore_dialplan(ctx: CallContext[AsteriskContext], p: RestoreParams) -> str:
    """The version before the active one, active again and reloaded: `OK <version>`. Without
    `asterisk` (the spec's example), the server whose dialplan changed last."""
    if p.asterisk.strip():
        server = await named_server(ctx, p.asterisk)
    else:
        server = await files.last_changed_server(ctx.services.db)
    restored = await files.restore_dialplan(ctx.services.ami, ctx.services.db, server)
    return f"OK {restored.version}"


@REGISTRY.method("updateInterface", level=33, params=FileParams, returns="text")
async def update_interface(ctx: CallContext[AsteriskContext], p: FileParams) -> str:
    """The same for the server's interface file, without a reload (nothing in Asterisk
    reads it by itself: `callgate dialplan export --kind interface` gives it out)."""
    server = await named_server(ctx, p.asterisk)
    prefixes = ctx.services.settings.dialplan_url_prefixes
    made = await files.update_file(ctx.services.ami, ctx.services.db, server, files.INTERFACE, p.url, prefixes)
    return f"OK {made.version}"
