"""API methods: prepaid codes (invites) and registration by code (registerRequest,
registerByCode, activatePrepaidCode, getPrepaidCodes, createPrepaidCode,
deletePrepaidCode). Logic: billing_core.provisioning.prepaid_codes / code_activation."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints

from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.maintenance import MAINTENANCE
from billing_core.catalog.params import Amount, Bool, Int, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext, TextAnswer
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning import code_activation, code_guard, prepaid_codes
from billing_core.provisioning.code_activation import Registration
from billing_core.provisioning.prepaid_codes import NewCode

Code = Annotated[str, StringConstraints(max_length=64)]
Signature = Annotated[str, StringConstraints(max_length=128)]
Target = Annotated[str, StringConstraints(max_length=32)]


def _blank_false(value: object) -> object:
    """An empty `register=` is the default (simulate): the alias hides the field from
    Params' empty-is-absent rule."""
    return False if isinstance(value, str) and not value.strip() else value


def _given(name: str, value: str) -> None:
    if not value:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, f"missing argument: {name}")


class RegisterRequestParams(Params):
    signature: Signature


@REGISTRY.method("registerRequest", level=0, params=RegisterRequestParams, returns="text")
async def register_request(ctx: CallContext[LedgerContext], p: RegisterRequestParams) -> TextAnswer:
    """A new level-10 invite-code for the client `signature` names, created for the key's owner."""
    _given("signature", p.signature)
    services = ctx.services
    await code_guard.count_registration(services, ctx.generations, ctx.peer_ip)
    owner = await services.profiles.user_by(ctx.generations, "username", ctx.key.owner)
    if owner is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "the key's owner is gone")
    new = prepaid_codes.register_request_code(p.signature, services.settings.register_code_ttl_s)
    code = await prepaid_codes.create_code(services, ctx.generations, owner, new, uses_invite=False)
    return TextAnswer(text=code, result=code)


class RegisterByCodeParams(Params):
    code: Code
    register_: Annotated[Bool, BeforeValidator(_blank_false)] = Field(
        default=False, alias="register"
    )  # `register` would shadow BaseModel's
    user: Str
    web_password: Str
    language: Annotated[str, StringConstraints(max_length=20)]


@REGISTRY.method("registerByCode", level=0, params=RegisterByCodeParams, returns="bool", invalidates=(NS_PROFILES,))
async def register_by_code(ctx: CallContext[LedgerContext], p: RegisterByCodeParams) -> bool:
    _given("code", p.code)
    new = Registration(p.code, p.register_, p.user, p.web_password, p.language)
    return await code_activation.register_by_code(ctx.services, ctx.generations, new, peer_ip=ctx.peer_ip)


class ActivatePrepaidCodeParams(Params):
    code: Code
    amount: Amount


@REGISTRY.method("activatePrepaidCode", level=1, params=ActivatePrepaidCodeParams, returns="bool")
async def activate_prepaid_code(ctx: CallContext[LedgerContext], p: ActivatePrepaidCodeParams) -> bool:
    _given("code", p.code)
    await code_activation.activate(
        ctx.services, ctx.generations, ctx.require_actor(), code=p.code, amount=p.amount, peer_ip=ctx.peer_ip
    )
    return True


class GetPrepaidCodesParams(Params):
    active: Bool = False
    all: Bool = False
    count: Bool = False


@REGISTRY.method("getPrepaidCodes", level=1, params=GetPrepaidCodesParams, returns="json")
async def get_prepaid_codes(ctx: CallContext[LedgerContext], p: GetPrepaidCodesParams) -> list[dict[str, Any]] | int:
    return await prepaid_codes.list_codes(
        ctx.services, ctx.generations, ctx.require_actor(), active_only=p.active, everyone=p.all, count=p.count
    )


class CreatePrepaidCodeParams(Params):
    accesslevel: Int = 10
    balance: Amount = Decimal("0.00")
    target: Target = ""


@REGISTRY.method("createPrepaidCode", level=1, params=CreatePrepaidCodeParams, returns="text")
async def create_prepaid_code(ctx: CallContext[LedgerContext], p: CreatePrepaidCodeParams) -> TextAnswer:
    new = NewCode(accesslevel=p.accesslevel, balance=p.balance, target=p.target)
    code = await prepaid_codes.create_code(ctx.services, ctx.generations, ctx.require_actor(), new)
    return TextAnswer(text=code, result=code)


class DeletePrepaidCodeParams(Params):
    code: Code


@REGISTRY.method("deletePrepaidCode", level=1, params=DeletePrepaidCodeParams, returns="bool")
async def delete_prepaid_code(ctx: CallContext[LedgerContext], p: DeletePrepaidCodeParams) -> bool:
    _given("code", p.code)
    await prepaid_codes.delete_code(ctx.services, ctx.generations, ctx.require_actor(), p.code)
    return True


@MAINTENANCE.task("prepaid_codes", order=40)
async def expire_prepaid_codes(services: Any, now: datetime) -> dict[str, Any]:
    """The maintenance run's part: codes past their expiry end, and what a funded one still
    holds goes back to who paid for it (idempotent)."""
    return {"expired": await prepaid_codes.expire_codes(services.db, now)}
