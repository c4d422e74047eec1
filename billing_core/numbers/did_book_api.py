"""API methods: the direct numbers of their owners (getDisaDIDList, updateDIDState,
getDIDList, updateDID, deleteDID, getDIDInfo, renewDID, getDIDCount). Logic in
billing_core.numbers.did_book and renewals."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, StringConstraints

from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Amount, Bool, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext, TextAnswer
from billing_core.ledger.context import LedgerContext
from billing_core.numbers import did_book, renewals


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Parameter = Annotated[Literal["autorenew", "enabled"], BeforeValidator(_lower)]
SortBy = Annotated[Literal["expiration", "cost", "did"], BeforeValidator(_lower)]
Comment = Annotated[str, StringConstraints(max_length=256)]
Owner = Annotated[str, StringConstraints(max_length=32)]


class NoArgs(Params):
    pass


@REGISTRY.method("getDisaDIDList", level=0, params=NoArgs, returns="json")
async def get_disa_did_list(ctx: CallContext[LedgerContext], p: NoArgs) -> list[dict[str, str]]:
    return await did_book.disa_numbers(ctx.services)


class UpdateDIDStateParams(Params):
    did: Str
    parameter: Parameter = "autorenew"
    state: Bool


@REGISTRY.method("updateDIDState", level=1, params=UpdateDIDStateParams, returns="bool", invalidates=(NS_PROFILES,))
async def update_did_state(ctx: CallContext[LedgerContext], p: UpdateDIDStateParams) -> bool:
    await did_book.update_state(ctx.services, ctx.require_actor(), p.did, p.parameter, p.state)
    return True


class GetDIDListParams(Params):
    sort_by: SortBy = "expiration"
    own: Bool = True


@REGISTRY.method("getDIDList", level=1, params=GetDIDListParams, returns="json")
async def get_did_list(ctx: CallContext[LedgerContext], p: GetDIDListParams) -> list[dict[str, Any]]:
    return await did_book.list_dids(ctx.services, ctx.generations, ctx.require_actor(), sort_by=p.sort_by, own=p.own)


class UpdateDIDParams(Params):
    did: Str
    owner: Owner | None = None
    comment: Comment | None = None
    cost: Amount | None = None
    expiration: Str | None = None


@REGISTRY.method("updateDID", level=22, params=UpdateDIDParams, returns="bool", invalidates=(NS_PROFILES,))
async def update_did(ctx: CallContext[LedgerContext], p: UpdateDIDParams) -> bool:
    changes = {
        name: value
        for name in ("owner", "comment", "cost", "expiration")
        if (value := getattr(p, name)) is not None
    }
    await did_book.update_did(ctx.services, ctx.generations, ctx.require_actor(), p.did, changes)
    return True


class DIDParams(Params):
    did: Str


@REGISTRY.method("deleteDID", level=22, params=DIDParams, returns="bool", invalidates=(NS_PROFILES,))
async def delete_did(ctx: CallContext[LedgerContext], p: DIDParams) -> bool:
    await did_book.delete_did(ctx.services, ctx.require_actor(), p.did)
    return True


@REGISTRY.method("getDIDInfo", level=22, params=DIDParams, returns="json")
async def get_did_info(ctx: CallContext[LedgerContext], p: DIDParams) -> dict[str, Any]:
    return await did_book.did_info(ctx.services, ctx.generations, ctx.require_actor(), p.did)


@REGISTRY.method("renewDID", level=22, params=DIDParams, returns="bool", invalidates=(NS_PROFILES,))
async def renew_did(ctx: CallContext[LedgerContext], p: DIDParams) -> bool:
    # True also when the rent already ran a month ahead (a retry): renewed, charged once.
    await renewals.renew_did(ctx.services, ctx.require_actor(), p.did)
    return True


@REGISTRY.method("getDIDCount", level=50, params=DIDParams, returns="text")
async def get_did_count(ctx: CallContext[LedgerContext], p: DIDParams) -> TextAnswer:
    count = str(await did_book.did_count(ctx.services, p.did))
    return TextAnswer(text=count, result=count)
