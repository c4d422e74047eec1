"""API methods: API keys (addKey, getKeys, getKey, updateKey, revokeKey).

A key is stored hashed: only its hint is ever shown. A caller sees and changes its own
keys; a master administrator everybody's. A change that can stop a key working
(updateKey, revokeKey) returns only once every worker has seen it
(ReadThroughCache.invalidate_everywhere): the key's next request anywhere is refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

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


class KeyNameParams(Params):
    name: Str


class UpdateKeyParams(Params):
    """The spec writes `accesslevel` (addKey: `accessLevel`) and `default user` (with a
    space; addKey: `default_user`): each is taken under both names."""

    name: Str
    auth_by: Str | None = None
    source: Str | None = None
    apikey: Str | None = None
    accesslevel: Int | None = Field(None, validation_alias=AliasChoices("accesslevel", "accessLevel"))
    default_user: Str | None = Field(None, validation_alias=AliasChoices("default_user", "default user"))
    allowed_methods: Str | None = None
    secure_only: Int | None = None
    enabled: Int | None = None


def _owner_filter(caller: UserRecord) -> str | None:
    """Whose keys the caller sees: its own; a master administrator's: everyone's (None)."""
    return None if ownership.is_master(caller) else caller.username


def _check_level(caller: UserRecord, level: int) -> None:
    keys_svc.check_access_level(level)
    # a master administrator may give keys any level (server keys for Asterisk)
    if level > caller.accesslevel and not ownership.is_master(caller):
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "a key above your own level")


async def _check_default_user(
    ctx: CallContext[LedgerContext], caller: UserRecord, auth_by: str, default_user: str
) -> None:
    """A static key acts as its default user: only for the caller or users it reaches."""
    user = await ctx.services.profiles.user_by(ctx.generations, auth_by, default_user)
    if user is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such default_user")
    if not await ownership.reaches(ctx.services.profiles, ctx.generations, caller, user.username):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "default_user is not yours")


async def _check_new_key(ctx: CallContext[LedgerContext], caller: UserRecord, p: AddKeyParams) -> None:
    keys_svc.check_auth_by(p.auth_by)
    checks.check_length("name", p.name, 64)
    checks.check_choice("secure_only", p.secure_only, (0, 1))
    _check_level(caller, p.accessLevel)
    if p.default_user:
        await _check_default_user(ctx, caller, p.auth_by, p.default_user)


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
    return await keys_svc.list_keys(ctx.services.db, owner=_owner_filter(caller_of(ctx)))


@REGISTRY.method("getKey", level=33, params=KeyNameParams, returns="json")
async def get_key(ctx: CallContext[LedgerContext], p: KeyNameParams) -> dict[str, Any]:
    """One key as getKeys shows it (the spec's example wraps it in an array; one object here)."""
    async with ctx.services.db.begin() as conn:
        row = await keys_svc.named_key(conn, p.name, owner=_owner_filter(caller_of(ctx)))
    return keys_svc.key_json(row)


async def _update_values(ctx: CallContext[LedgerContext], caller: UserRecord, p: UpdateKeyParams) -> dict[str, Any]:
    given = p.model_fields_set - {"name"}
    if not given:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update")
    values: dict[str, Any] = {}
    if p.auth_by is not None:
        keys_svc.check_auth_by(p.auth_by)
        values["auth_by"] = p.auth_by
    if p.source is not None:
        values["source"] = keys_svc.check_source(p.source)
    if p.apikey is not None:
        keys_svc.check_new_secret(p.apikey)
        values["apikey"] = p.apikey
    if p.accesslevel is not None:
        _check_level(caller, p.accesslevel)
        values["access_level"] = p.accesslevel
    if p.allowed_methods is not None:
        checks.check_length("allowed_methods", p.allowed_methods, 2048)
        values["allowed_methods"] = p.allowed_methods
    for name in ("secure_only", "enabled"):
        value = getattr(p, name)
        if value is not None:
            checks.check_choice(name, value, (0, 1))
            values[name] = value
    if "default_user" in given:
        values["default_user"] = p.default_user or None  # empty: no default user (dynamic)
    return values


@REGISTRY.method("updateKey", level=33, params=UpdateKeyParams, returns="bool", invalidates=(NS_PROFILES,))
async def update_key(ctx: CallContext[LedgerContext], p: UpdateKeyParams) -> bool:
    caller = caller_of(ctx)
    owner = _owner_filter(caller)
    values = await _update_values(ctx, caller, p)
    if values.get("default_user"):
        async with ctx.services.db.begin() as conn:
            current = await keys_svc.named_key(conn, p.name, owner=owner)
        await _check_default_user(ctx, caller, values.get("auth_by", current.auth_by), values["default_user"])
    await keys_svc.update_key(ctx.services.db, ctx.services.box, p.name, owner=owner, values=values)
    await ctx.services.cache.invalidate_everywhere(NS_PROFILES)
    return True


@REGISTRY.method("revokeKey", level=33, params=KeyNameParams, returns="bool", invalidates=(NS_PROFILES,))
async def revoke_key(ctx: CallContext[LedgerContext], p: KeyNameParams) -> bool:
    """The key never works again, on any worker, from the next request on (kept, hidden)."""
    await keys_svc.revoke_key(ctx.services.db, p.name, owner=_owner_filter(caller_of(ctx)))
    await ctx.services.cache.invalidate_everywhere(NS_PROFILES)
    return True
