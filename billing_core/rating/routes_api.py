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


class RouteIdParams(Params):
    id: Int


@REGISTRY.method("getRouteInfo", level=22, params=RouteIdParams, returns="json")
async def get_route_info(ctx: CallContext[RatingContext], p: RouteIdParams) -> dict[str, Any]:
    """One route, fields as getRoutes (the spec's example, then callgate's own); its
    passwords are never part of the answer."""
    return await routes.route_info(ctx.services.db, ctx.require_actor(), p.id)


class UpdateRouteParams(Params):
    id: Int
    route: Str | None = None
    prefix: Str | None = None
    host: Str | None = None
    user: Str | None = None
    password: Str | None = Field(default=None, alias="pass")
    callerid: Int | None = None
    balance_handler: Str | None = None
    balance_username: Str | None = None
    balance_password: Str | None = None


@REGISTRY.method("updateRoute", level=22, params=UpdateRouteParams, returns="bool", invalidates=(NS_RATING,))
async def update_route(ctx: CallContext[RatingContext], p: UpdateRouteParams) -> bool:
    changes = routes.RouteChanges(
        route=p.route,
        prefix=p.prefix,
        host=p.host,
        user=p.user,
        password=p.password,
        callerid=p.callerid,
        balance_handler=p.balance_handler,
        balance_username=p.balance_username,
        balance_password=p.balance_password,
    )
    await routes.update_route(ctx.services.db, ctx.services.box, ctx.require_actor(), p.id, changes)
    return True


@REGISTRY.method("deleteRoute", level=22, params=RouteIdParams, returns="bool", invalidates=(NS_RATING,))
async def delete_route(ctx: CallContext[RatingContext], p: RouteIdParams) -> bool:
    """Refused (E_DATA_ABORT) while a tariff entry uses the route (docs/decisions.md)."""
    await routes.delete_route(ctx.services.db, ctx.require_actor(), p.id)
    return True
