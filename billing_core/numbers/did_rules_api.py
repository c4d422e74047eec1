"""API methods: DIDTables editing and catalogue (getDIDActions, getFilters, updateDIDRule,
deleteDIDRule). Logic lives in billing_core.numbers.did_rule_edits."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Bool, Int, NoParams, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.ledger.context import LedgerContext
from billing_core.numbers import did_rule_edits
from billing_core.numbers.dids_api import Condition, Policy, Source, Timeout, Word, Word32, Word64


def _blank_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


OptionalPos = Annotated[int | None, BeforeValidator(_blank_none), Field(ge=1, le=2**31 - 1)]


@REGISTRY.method("getDIDActions", level=1, params=NoParams, returns="json")
async def get_did_actions(ctx: CallContext[LedgerContext], p: NoParams) -> dict[str, dict[str, str]]:
    return await did_rule_edits.did_actions(ctx.services, ctx.generations, ctx.require_actor())


class GetFiltersParams(Params):
    resolver: Word32 | None = None
    sources: Bool = False


@REGISTRY.method("getFilters", level=1, params=GetFiltersParams, returns="json")
async def get_filters(ctx: CallContext[LedgerContext], p: GetFiltersParams) -> dict[str, list[str]] | list[str]:
    return did_rule_edits.filters(p.resolver, p.sources)


class UpdateDIDRuleParams(Params):
    did: Str
    rule: Annotated[int, Field(ge=1, le=2**31 - 1)]
    pos: OptionalPos = None
    source: Source | None = None
    pattern: Word | None = None
    policy: Policy | None = None
    sms_action: Word64 | None = None
    sms_destination: Word | None = None
    action: Word64 | None = None
    server: Word | None = None
    destination: Word | None = None
    callerid: Word64 | None = None
    timeout: Timeout = None
    condition: Condition | None = None
    input: Word64 | None = None


_FIELDS = (
    "source", "pattern", "policy", "sms_action", "sms_destination", "action", "server", "destination",
    "callerid", "timeout", "condition", "input",
)  # fmt: skip


@REGISTRY.method("updateDIDRule", level=1, params=UpdateDIDRuleParams, returns="bool", invalidates=(NS_PROFILES,))
async def update_did_rule(ctx: CallContext[LedgerContext], p: UpdateDIDRuleParams) -> bool:
    # Only the fields the request names change (`timeout=` empty keeps the timeout).
    changes: dict[str, Any] = {name: getattr(p, name) for name in _FIELDS if name in p.model_fields_set}
    changes = {name: value for name, value in changes.items() if value is not None}
    await did_rule_edits.update_rule(
        ctx.services, ctx.generations, ctx.require_actor(), did=p.did, number=p.rule, pos=p.pos, changes=changes
    )
    return True


class DeleteDIDRuleParams(Params):
    did: Str
    rule: Int
    pattern: Word | None = None


@REGISTRY.method("deleteDIDRule", level=1, params=DeleteDIDRuleParams, returns="bool", invalidates=(NS_PROFILES,))
async def delete_did_rule(ctx: CallContext[LedgerContext], p: DeleteDIDRuleParams) -> bool:
    await did_rule_edits.delete_rule(
        ctx.services, ctx.generations, ctx.require_actor(), did=p.did, number=p.rule, pattern=p.pattern
    )
    return True
