"""API method createCallback (spec "Call processing"); how a callback runs is in
billing_core.asterisk.callback (an AMI Originate into the dialplan's [callgate-callback],
each leg an ordinary callPrepare/callFinish call)."""

from __future__ import annotations

from sqlalchemy import select

from billing_core.asterisk.callback import Callback, create_callback, pick_server
from billing_core.asterisk.context import AsteriskContext
from billing_core.catalog.params import Num, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.directory.tables import sip_extensions
from billing_core.errors import ApiError, ErrorCode


class CreateCallbackParams(Params):
    destination1: Str
    destination2: Str
    callerid: Str = ""
    epitch: Num | None = None


@REGISTRY.method("createCallback", level=1, params=CreateCallbackParams, returns="bool")
async def create_callback_method(ctx: CallContext[AsteriskContext], p: CreateCallbackParams) -> bool:
    """Call destination1 as the acting user; when it answers, call destination2 and join
    them. True: leg 1 answered (leg 2 is being dialled); false: leg 1 did not answer."""
    actor = ctx.require_actor()
    pitch = None
    if p.epitch is not None:
        if p.epitch != p.epitch.to_integral_value():
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "epitch must be a whole number from 1 to 6")
        pitch = int(p.epitch)
    cb = Callback("", p.destination1.strip(), p.destination2.strip(), p.callerid.strip(), pitch).checked()
    async with ctx.services.db.begin() as conn:
        query = (
            select(sip_extensions.c.sip_extension, sip_extensions.c.sip_server)
            .where(sip_extensions.c.user_id == actor.id)
            .order_by(sip_extensions.c.id)
        )
        accounts = [(str(r.sip_extension), str(r.sip_server)) for r in await conn.execute(query)]
    server, login = pick_server(ctx.services.ami, accounts)
    settings = ctx.services.settings
    return await create_callback(
        ctx.services.ami, server, Callback(login, cb.destination1, cb.destination2, cb.callerid, cb.pitch),
        ring_s=settings.ring_timeout_s, margin_s=settings.ami_action_timeout_s,
    )  # fmt: skip

