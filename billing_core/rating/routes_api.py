"""API methods: routes (spec section "Routing"); logic in billing_core.rating.routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from billing_core.cache.keys import NS_RATING
from billing_core.catalog.params import Bool, Int, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext
from billing_core.rating import routes
from billing_core.rating.context import RatingContext


class GetRoutesParams(Params):
    update: Bool = False  # accepted, ignored: no balance handlers run in callgate
    type: Literal["all", "sip", "sms", "default"] = "all"
    all: Bool = False


@REGISTRY.method(
    "getRoutes",
    level=22, params=GetRoutesParams, returns="json",
    aliases=Aliases(vcs=("routes.list",), billmgr=("route",), elid="id"),
)
async def get_routes(ctx: CallContext[RatingContext], p: GetRoutesParams) -> list[dict[str, Any]]:
    """Routes the acting user may see (see ownership.listing_owners: `all` adds those of managed users;
    administrators see the administrators' routes, with all=true every route).
    `update=true` is accepted and ignored: route balance handlers are not run here, so
    lastupdate / clientlastupdate / balance are null."""
    actor = ctx.require_actor()
    return await routes.list_routes(ctx.services.db, actor, route_type=p.type, include_managed=p.all)


class AddRouteParams(Params):
    route: Str
    type: Literal["sip", "sms"]
    sip_server: Str
    prefix: Str
    host: Str = ""
    user: Str = ""
    fromuser: Bool = False
    # `pass` is a Python keyword: the field is `password`, read from the wire name `pass`.
    password: Str = Field(default="", alias="pass")
    callerid: Int = 2
    balance_handler: Str = ""
    balance_username: Str = ""
    balance_password: Str = ""


@REGISTRY.method(
    "addRoute",
    level=22, params=AddRouteParams, returns="bool", invalidates=(NS_RATING,),
    aliases=Aliases(vcs=("routes.add",), billmgr=("route.edit#create",), elname="route"),
)
async def add_route(ctx: CallContext[RatingContext], p: AddRouteParams) -> bool:
    actor = ctx.require_actor()
    new = routes.NewRoute(
        route=p.route,
        type=p.type,
        sip_server=p.sip_server,
        prefix=p.prefix,
        host=p.host,
        user=p.user,
        fromuser=p.fromuser,
        password=p.password,
        callerid=p.callerid,
        balance_handler=p.balance_handler,
        balance_username=p.balance_username,
        balance_password=p.balance_password,
    )
    await routes.add_route(ctx.services.db, ctx.services.box, actor, new)
    return True


class UpdateRouteStateParams(Params):
    id: Int
    state: Bool


@REGISTRY.method(
    "updateRouteState",
    level=22, params=UpdateRouteStateParams, returns="bool", invalidates=(NS_RATING,),
    aliases=Aliases(
        vcs=("routes.setState",), billmgr=("route.suspend?state=false", "route.resume?state=true"), elid="id"
    ),
)
async def update_route_state(ctx: CallContext[RatingContext], p: UpdateRouteStateParams) -> bool:
    await routes.set_route_state(ctx.services.db, ctx.require_actor(), p.id, p.state)
    return True
