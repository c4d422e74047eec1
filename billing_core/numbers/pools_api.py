"""API methods: DID pools and ordering (addDIDPool, updateDIDPool, getDIDPools,
getDIDPoolInfo, deleteDIDPool, getDIDPool, orderDID). Logic in billing_core.numbers.pools
and did_orders."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Amount, Int, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.ledger.context import LedgerContext
from billing_core.numbers import did_orders, pools

Name = Annotated[str, StringConstraints(max_length=64)]
Provider = Annotated[str, StringConstraints(max_length=32, pattern=r"^[A-Za-z0-9_.-]*$")]
Secret = Annotated[str, StringConstraints(max_length=256)]
Digits = Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9]*$")]
Arg = Annotated[str, StringConstraints(max_length=256)]


class AddDIDPoolParams(Params):
    country: Name
    area: Name
    cost: Amount = Decimal("0.00")
    installcost: Amount = Decimal("0.00")
    provider: Provider = "local"
    user: Secret = ""
    pass_: Secret = Field("", alias="pass")  # a Python keyword
    param1: Secret = ""
    param2: Secret = ""
    param3: Secret = ""
    qty: Int = 100


def _fields(p: Params, names: tuple[str, ...]) -> dict[str, Any]:
    values = {name: getattr(p, name) for name in names}
    values["pass"] = values.pop("pass_")
    return values


FIELDS = ("country", "area", "cost", "installcost", "provider", "user", "pass_", "param1", "param2", "param3", "qty")


@REGISTRY.method("addDIDPool", level=33, params=AddDIDPoolParams, returns="bool")
async def add_did_pool(ctx: CallContext[LedgerContext], p: AddDIDPoolParams) -> bool:
    await pools.add_pool(ctx.services, ctx.require_actor(), _fields(p, FIELDS))
    return True


class UpdateDIDPoolParams(Params):
    id: Int
    country: Name | None = None
    area: Name | None = None
    cost: Amount | None = None
    installcost: Amount | None = None
    provider: Provider | None = None
    user: Secret | None = None
    pass_: Secret | None = Field(None, alias="pass")
    param1: Secret | None = None
    param2: Secret | None = None
    param3: Secret | None = None
    qty: Int | None = None


@REGISTRY.method("updateDIDPool", level=33, params=UpdateDIDPoolParams, returns="bool")
async def update_did_pool(ctx: CallContext[LedgerContext], p: UpdateDIDPoolParams) -> bool:
    changes = {name: value for name, value in _fields(p, FIELDS).items() if value is not None}
    await pools.update_pool(ctx.services, ctx.require_actor(), p.id, changes)
    return True


class NoArgs(Params):
    pass


@REGISTRY.method("getDIDPools", level=33, params=NoArgs, returns="json")
async def get_did_pools(ctx: CallContext[LedgerContext], p: NoArgs) -> list[dict[str, Any]]:
    return await pools.list_pools(ctx.services, ctx.generations, ctx.require_actor())


class PoolIdParams(Params):
    id: Int


@REGISTRY.method("getDIDPoolInfo", level=33, params=PoolIdParams, returns="json")
async def get_did_pool_info(ctx: CallContext[LedgerContext], p: PoolIdParams) -> dict[str, Any]:
    return await pools.pool_info(ctx.services, ctx.generations, ctx.require_actor(), p.id)


@REGISTRY.method("deleteDIDPool", level=33, params=PoolIdParams, returns="bool")
async def delete_did_pool(ctx: CallContext[LedgerContext], p: PoolIdParams) -> bool:
    await pools.delete_pool(ctx.services, ctx.require_actor(), p.id)
    return True


class GetDIDPoolParams(Params):
    country: Name | None = None
    area: Name | None = None
    search_pattern: Digits = ""


@REGISTRY.method("getDIDPool", level=1, params=GetDIDPoolParams, returns="json")
async def get_did_pool(ctx: CallContext[LedgerContext], p: GetDIDPoolParams) -> list[dict[str, Any]]:
    return await pools.browse(
        ctx.services, ctx.generations, ctx.require_actor(), country=p.country, area=p.area, pattern=p.search_pattern
    )


class OrderDIDParams(Params):
    pool_id: Int
    did: Str
    arg1: Arg = ""
    arg2: Arg = ""
    arg3: Arg = ""


@REGISTRY.method("orderDID", level=1, params=OrderDIDParams, returns="bool", invalidates=(NS_PROFILES,))
async def order_did(ctx: CallContext[LedgerContext], p: OrderDIDParams) -> bool:
    await did_orders.order_did(
        ctx.services, ctx.require_actor(), pool_id=p.pool_id, did=p.did, args=(p.arg1, p.arg2, p.arg3)
    )
    return True
