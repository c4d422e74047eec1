"""API methods: SIP accounts (createExtension, getExtensions, getExtensionInfo, getAvailExtension,
updateExtension, deleteExtension) and switchRates."""

from __future__ import annotations

from typing import Any, Literal

from billing_core import checks
from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Bool, Int, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext, TextAnswer
from billing_core.directory import ownership
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning import deletions, extension_lists, user_info
from billing_core.provisioning import extensions as ext_svc
from billing_core.provisioning.users_api import caller_of

# The User object's sip_transport values (the argument is a ustring without {braces}).
SipTransport = Literal["udp,tcp,tls", "udp,tcp", "tls", "udp", "tcp"]


class CreateExtensionParams(Params):
    owner: Str | None = None  # a user name; default: the actor
    sip_extension: Str
    sip_password: Str
    sip_server: Str = ""
    sip_callerid: Str = ""
    sip_language: Str | None = None  # default: the owner's language
    sip_srtp: Bool = False


class GetExtensionInfoParams(Params):
    sip_extension: Str
    property: Str | None = None


class UpdateExtensionParams(Params):
    sip_extension: Str
    extension: Str | None = None  # new name
    sip_password: Str | None = None
    sip_server: Str | None = None
    sip_srtp: Int | None = None
    sip_transport: SipTransport | None = None
    sip_callerid: Str | None = None
    sip_max_call_len: Int | None = None
    sip_reach: Int | None = None
    sip_redirect: Str | None = None
    sip_force_callback: Int | None = None
    sip_language: Str | None = None
    sip_rates_id: Int | None = None  # 0 = none
    disa_pin: Str | None = None  # digits, kept as text so a leading 0 survives; empty = no PIN
    disa_trusted_cli: Str | None = None


class GetExtensionsParams(Params):
    own: Bool = True
    all: Bool = False
    owner: Str | None = None


class GetAvailExtensionParams(Params):
    own: Bool = False


class DeleteExtensionParams(Params):
    sip_extension: Str


class SwitchRatesParams(Params):
    id: Int
    state: Bool | None = None
    sip_extension: Str


@REGISTRY.method(
    "createExtension",
    level=1, params=CreateExtensionParams, returns="bool", invalidates=(NS_PROFILES,),
    aliases=Aliases(vcs=("extensions.add",), billmgr=("extension.edit#create",), elname="sip_extension"),
)
async def create_extension(ctx: CallContext[LedgerContext], p: CreateExtensionParams) -> bool:
    if p.owner:
        owner = await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller_of(ctx), p.owner)
    else:
        owner = ctx.require_actor()
    new = ext_svc.NewExtension(
        sip_extension=p.sip_extension,
        sip_password=p.sip_password,
        sip_server=p.sip_server,
        sip_callerid=p.sip_callerid,
        sip_language=p.sip_language,
        sip_srtp=p.sip_srtp,
    )
    await ext_svc.create_extension(ctx.services, owner, new)
    return True


@REGISTRY.method(
    "getExtensionInfo",
    level=1, params=GetExtensionInfoParams, returns="depends",
    aliases=Aliases(vcs=("extensions.editForm",), billmgr=("extension.edit#show",), elid="sip_extension"),
)
async def get_extension_info(ctx: CallContext[LedgerContext], p: GetExtensionInfoParams) -> dict[str, Any] | TextAnswer:
    """The extension as JSON, or with `property` one of its values as text."""
    info = await ext_svc.extension_info(ctx.services, caller_of(ctx), p.sip_extension)
    if p.property is None:
        return info
    if p.property not in info:
        raise checks.invalid(f"unknown property: {p.property[:64]}")
    return TextAnswer(text=user_info.value_text(p.property, info[p.property]))


@REGISTRY.method(
    "updateExtension",
    level=1, params=UpdateExtensionParams, returns="bool", invalidates=(NS_PROFILES,),
    aliases=Aliases(vcs=("extensions.edit",), billmgr=("extension.edit#update",), elid="sip_extension"),
)
async def update_extension(ctx: CallContext[LedgerContext], p: UpdateExtensionParams) -> bool:
    changes = {name: getattr(p, name) for name in p.model_fields_set if name != "sip_extension"}
    await ext_svc.update_extension(ctx.services, caller_of(ctx), p.sip_extension, changes)
    return True


@REGISTRY.method("switchRates", level=1, params=SwitchRatesParams, returns="bool", invalidates=(NS_PROFILES,))
async def switch_rates(ctx: CallContext[LedgerContext], p: SwitchRatesParams) -> bool:
    await ext_svc.switch_rates(ctx.services, caller_of(ctx), p.sip_extension, p.id, p.state)
    return True


@REGISTRY.method("getExtensions", level=1, params=GetExtensionsParams, returns="json")
async def get_extensions(ctx: CallContext[LedgerContext], p: GetExtensionsParams) -> list[dict[str, Any]]:
    """The rules of own / all / owner: billing_core.provisioning.extension_lists."""
    caller = caller_of(ctx)
    if p.owner:
        subject = await ownership.reachable_user(ctx.services.profiles, ctx.generations, caller, p.owner)
        return await extension_lists.list_extensions(ctx.services, caller, subject, below=False, everyone=False)
    below = p.all or not p.own
    return await extension_lists.list_extensions(
        ctx.services, caller, ctx.require_actor(), below=below, everyone=p.all
    )


@REGISTRY.method("getAvailExtension", level=1, params=GetAvailExtensionParams, returns="text")
async def get_avail_extension(ctx: CallContext[LedgerContext], p: GetAvailExtensionParams) -> TextAnswer:
    if p.own:
        return TextAnswer(text=await extension_lists.next_own_extension(ctx.services, ctx.require_actor()))
    caller_of(ctx)
    return TextAnswer(text=await extension_lists.next_main_extension(ctx.services))


@REGISTRY.method("deleteExtension", level=1, params=DeleteExtensionParams, returns="bool", invalidates=(NS_PROFILES,))
async def delete_extension(ctx: CallContext[LedgerContext], p: DeleteExtensionParams) -> bool:
    """Soft: hidden from every read, refused at once for calls on every worker; its login stays taken."""
    await deletions.delete_extension(ctx.services, caller_of(ctx), p.sip_extension)
    await ctx.services.cache.invalidate_everywhere(NS_PROFILES)
    return True
