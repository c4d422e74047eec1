"""API methods: users (getInfo, getValue, updateUser, registerUser, getUsers, deleteUser).

Who is who in every handler of this package: the *caller* is the authenticated user (its
level and rights were checked by the dispatcher); the *actor* is the user the request is
made from (`username=`, which the caller reaches), and the default subject of a method.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Amount, Bool, Int, NoParams, Num, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext, TextAnswer
from billing_core.directory import ownership
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning import deletions, registration, user_info, user_updates
from billing_core.records import UserRecord


def caller_of(ctx: CallContext[LedgerContext]) -> UserRecord:
    """The authenticated user (every method of level >= 1 has one)."""
    if ctx.user is None:
        raise ApiError(ErrorCode.E_AUTH_FAILED, "this method needs an authorized user")
    return ctx.user


class GetValueParams(Params):
    property: Str


class UpdateUserParams(Params):
    """Both documented variants of updateUser (sections User and User control)."""

    user: Str | None = None  # the user to update; default: the actor
    web_password: Str | None = None
    accesslevel: Int | None = None
    active: Int | None = None
    account: Int | None = None
    currency: Str | None = None
    language: Str | None = None
    timezone: Num | None = None
    rates: Int | None = None
    allowed_rates: Str | None = None
    allowed_call_len: Int | None = None
    notify_email: Str | None = None
    notify_balance: Int | None = None
    notify_did: Int | None = None
    notify_ticket: Int | None = None
    notify_balance_limit: Amount | None = None
    invites: Int | None = None
    comment: Str | None = None


class RegisterUserParams(Params):
    user: Str
    web_password: Str
    accesslevel: Int
    sip_server: Str
    sip_extension: Str
    sip_password: Str
    balance: Amount = Decimal("0.00")
    language: Str = "en"  # the spec's config.defaultlanguage
    currency: Str = "EUR"
    sip_srtp: Bool = False
    account: Str = "auto"


class GetUsersParams(Params):
    all: Bool = False


class DeleteUserParams(Params):
    user: Str


@REGISTRY.method(
    "getInfo",
    level=1, params=NoParams, returns="json",
    aliases=Aliases(vcs=("clients.editForm",), billmgr=("user.edit#show",), elid="username"),
)
async def get_info(ctx: CallContext[LedgerContext], p: NoParams) -> dict[str, Any]:
    return await user_info.user_object(ctx.services, ctx.generations, ctx.user, ctx.require_actor())


@REGISTRY.method("getValue", level=1, params=GetValueParams, returns="text")
async def get_value(ctx: CallContext[LedgerContext], p: GetValueParams) -> TextAnswer:
    obj = await user_info.user_object(ctx.services, ctx.generations, ctx.user, ctx.require_actor())
    return TextAnswer(text=user_info.user_value(obj, p.property))


@REGISTRY.method(
    "updateUser",
    level=1, params=UpdateUserParams, returns="bool", invalidates=(NS_PROFILES,),
    aliases=Aliases(
        vcs=("clients.edit",),
        billmgr=("user.edit#update", "user.suspend?active=-1", "user.resume?active=1"),
        elid="user",
    ),
)
async def update_user(ctx: CallContext[LedgerContext], p: UpdateUserParams) -> bool:
    caller = caller_of(ctx)
    if p.user:
        target = await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller, p.user)
    else:
        target = ctx.require_actor()
    changes = {name: getattr(p, name) for name in p.model_fields_set if name != "user"}
    await user_updates.update_user(ctx.services, ctx.generations, caller, target, changes)
    return True


@REGISTRY.method(
    "registerUser",
    level=22, params=RegisterUserParams, returns="bool", invalidates=(NS_PROFILES,),
    aliases=Aliases(vcs=("clients.add",), billmgr=("user.edit#create",), elname="user"),
)
async def register_user(ctx: CallContext[LedgerContext], p: RegisterUserParams) -> bool:
    new = registration.NewUser(
        username=p.user,
        md5_password=p.web_password,
        accesslevel=p.accesslevel,
        sip_server=p.sip_server,
        sip_extension=p.sip_extension,
        sip_password=p.sip_password,
        balance=p.balance,
        language=p.language,
        currency=p.currency,
        sip_srtp=p.sip_srtp,
        account=p.account,
    )
    await registration.register_user(ctx.services, ctx.generations, caller_of(ctx), ctx.require_actor(), new)
    return True


@REGISTRY.method(
    "getUsers",
    level=22, params=GetUsersParams, returns="json",
    aliases=Aliases(vcs=("clients.list",), billmgr=("user",), elid="username"),
)
async def get_users(ctx: CallContext[LedgerContext], p: GetUsersParams) -> list[dict[str, Any]]:
    return await user_info.list_users(
        ctx.services, ctx.generations, ctx.require_actor(), viewer=ctx.user, everyone=p.all
    )


@REGISTRY.method("deleteUser", level=22, params=DeleteUserParams, returns="bool", invalidates=(NS_PROFILES,))
async def delete_user(ctx: CallContext[LedgerContext], p: DeleteUserParams) -> bool:
    """Soft: the user, its SIP accounts and keys are hidden and refused at once on every
    worker; its CDRs, holds, transactions and account stay (provisioning.deletions)."""
    caller = caller_of(ctx)
    target = await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller, p.user)
    await deletions.delete_user(ctx.services, caller, target)
    await ctx.services.cache.invalidate_everywhere(NS_PROFILES)
    return True
