"""API methods: API keys (addKey, getKeys). A key is stored hashed: only its hint is ever shown."""

from __future__ import annotations

from typing import Any

from billing_core import checks
from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Int, NoParams, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.directory import keys as keys_svc
from billing_core.directory import ownership
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning.users_api import caller_of
from billing_core.records import UserRecord


class AddKeyParams(Params):
    name: Str
    auth_by: Str
    source: Str
    apikey: Str
    accessLevel: Int  # the spec's spelling (updateKey spells it accesslevel)
    default_user: Str | None = None
    allowed_methods: Str = ""  # empty: every method
    secure_only: Int


async def _check_new_key(ctx: CallContext[LedgerContext], caller: UserRecord, p: AddKeyParams) -> None:
    keys_svc.check_auth_by(p.auth_by)
    checks.check_length("name", p.name, 64)
    checks.check_choice("secure_only", p.secure_only, (0, 1))
    # a master administrator may create keys of any level (server keys for Asterisk)
    if p.accessLevel > caller.accesslevel and not ownership.is_master(caller):
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "a key above your own level")
    if p.default_user:
        # a static key acts as its default user: only for the caller or users it reaches
        user = await ctx.services.profiles.user_by(ctx.generations, p.auth_by, p.default_user)
        if user is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such default_user")
        if not await ownership.reaches(ctx.services.profiles, ctx.generations, caller, user.username):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "default_user is not yours")


@REGISTRY.method("addKey", level=33, params=AddKeyParams, returns="bool", invalidates=(NS_PROFILES,))
async def add_key(ctx: CallContext[LedgerContext], p: AddKeyParams) -> bool:
    caller = caller_of(ctx)
    await _check_new_key(ctx, caller, p)
    await keys_svc.add_key(
        ctx.services.db,
        ctx.services.box,
        name=p.name,
        access_level=p.accessLevel,
        source=p.source,
        owner=caller.username,
        auth_by=p.auth_by,
        default_user=p.default_user,
        allowed_methods=p.allowed_methods,
        secure_only=p.secure_only,
        apikey=p.apikey,
    )
    return True


@REGISTRY.method("getKeys", level=33, params=NoParams, returns="json")
async def get_keys(ctx: CallContext[LedgerContext], p: NoParams) -> list[dict[str, Any]]:
    """The caller's keys (a master administrator: every key), with the hint in place of the key."""
    caller = caller_of(ctx)
    owner = None if ownership.is_master(caller) else caller.username
    rows = await keys_svc.list_keys(ctx.services.db, owner=owner)
    return [{**row, "key": row["apikey"], "maintenance": ""} for row in rows]
