"""API methods: personal plan sets (aliases): getAliases, getAlias, addAlias, updateAlias,
deleteAlias. Logic in billing_core.numbers.alias_book; how calls use them in
billing_core.numbers.aliases. Every write bumps NS_ALIASES, which the call path reads."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from billing_core.cache.keys import NS_ALIASES
from billing_core.catalog.params import Bool, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext
from billing_core.directory.context import DirectoryContext
from billing_core.numbers import alias_book

AliasId = Annotated[int, Field(ge=1, le=2**31 - 1)]
Number = Annotated[str, Field(max_length=64)]  # digits, checked by alias_book (E_INVALID_ARGUMENT)


class GetAliasesParams(Params):
    all: Bool = False


@REGISTRY.method(
    "getAliases",
    level=1, params=GetAliasesParams, returns="json",
    aliases=Aliases(vcs=("aliases.list",), billmgr=("alias",), elid="id"),
)
async def get_aliases(ctx: CallContext[DirectoryContext], p: GetAliasesParams) -> list[dict[str, Any]]:
    return await alias_book.list_aliases(ctx.services, ctx.require_actor(), everything=p.all)


class AliasIdParams(Params):
    id: AliasId


@REGISTRY.method(
    "getAlias",
    level=1, params=AliasIdParams, returns="json",
    aliases=Aliases(vcs=("aliases.editForm",), billmgr=("alias.edit#show",), elid="id"),
)
async def get_alias(ctx: CallContext[DirectoryContext], p: AliasIdParams) -> dict[str, Any]:
    return await alias_book.get_alias(ctx.services, ctx.require_actor(), p.id)


class AddAliasParams(Params):
    alias: Number
    destination: Number
    sip_extension: Str | None = None
    global_: Bool = Field(False, alias="global")  # `global` is a Python keyword


@REGISTRY.method(
    "addAlias",
    level=1, params=AddAliasParams, returns="bool", invalidates=(NS_ALIASES,),
    aliases=Aliases(vcs=("aliases.add",), billmgr=("alias.edit#create",), elname="alias"),
)
async def add_alias(ctx: CallContext[DirectoryContext], p: AddAliasParams) -> bool:
    await alias_book.add_alias(
        ctx.services,
        ctx.require_actor(),
        alias=p.alias,
        destination=p.destination,
        sip_extension=p.sip_extension or None,
        is_global=p.global_,
    )
    return True


class UpdateAliasParams(Params):
    """`id` names the alias, as the spec's arguments say; its example names it by `alias`
    instead (`updateAlias?alias=111&destination=…`), which is taken as the actor's own
    alias of that name when no id is given."""

    id: AliasId | None
    alias: Number | None = None
    destination: Number | None = None
    sip_extension: Str | None = None  # "" = for every extension of the owner

    @model_validator(mode="before")
    @classmethod
    def _id_or_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" not in data and data.get("alias"):
            return {**data, "id": None}
        return data


@REGISTRY.method(
    "updateAlias",
    level=1, params=UpdateAliasParams, returns="bool", invalidates=(NS_ALIASES,),
    aliases=Aliases(vcs=("aliases.edit",), billmgr=("alias.edit#update",), elid="id"),
)
async def update_alias(ctx: CallContext[DirectoryContext], p: UpdateAliasParams) -> bool:
    await alias_book.update_alias(
        ctx.services,
        ctx.require_actor(),
        alias_id=p.id,
        name=p.alias,
        destination=p.destination,
        sip_extension=p.sip_extension,
    )
    return True


@REGISTRY.method(
    "deleteAlias",
    level=1, params=AliasIdParams, returns="bool", invalidates=(NS_ALIASES,),
    aliases=Aliases(vcs=("aliases.delete",), billmgr=("alias.delete",), elid="id"),
)
async def delete_alias(ctx: CallContext[DirectoryContext], p: AliasIdParams) -> bool:
    await alias_book.delete_alias(ctx.services, ctx.require_actor(), p.id)
    return True
