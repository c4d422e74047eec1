"""API methods of the Asterisk servers that act on live calls (spec "Data security":
closeChannels); rules in billing_core.asterisk.channels_close."""

from __future__ import annotations

from sqlalchemy import select

from billing_core.asterisk.channels_close import close_channels
from billing_core.asterisk.context import AsteriskContext
from billing_core.catalog.params import NoParams
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.directory.tables import sip_extensions

CLOSE_WAIT_S = 5.0  # how long closeChannels waits for the Hangup events of its channels


@REGISTRY.method("closeChannels", level=50, params=NoParams, returns="bool")
async def close_user_channels(ctx: CallContext[AsteriskContext], p: NoParams) -> bool:
    """Every live channel of the acting user (`login=`), on every server: true when all
    are gone, false when some still are after CLOSE_WAIT_S."""
    actor = ctx.require_actor()
    async with ctx.services.db.begin() as conn:
        query = select(sip_extensions.c.sip_extension).where(sip_extensions.c.user_id == actor.id)
        extensions = {str(e) for e in (await conn.execute(query)).scalars()}
    return await close_channels(ctx.services.ami, actor.id, extensions, wait_s=CLOSE_WAIT_S)
