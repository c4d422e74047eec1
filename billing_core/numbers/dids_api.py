"""API methods: direct numbers and their DIDTables rule chains (addDID, addDIDRule,
getDIDRules, resolveDIDRule). Logic lives in billing_core.numbers.dids / did_rules."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from billing_core.cache.keys import NS_PROFILES
from billing_core.catalog.params import Amount, Int, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext, TextAnswer
from billing_core.ledger.context import LedgerContext
from billing_core.numbers import did_rules, dids
from billing_core.numbers.did_rules import NewRule, Resolved

# A rule field is one word of resolveDIDRule's text line: no whitespace inside.
Word = Annotated[str, StringConstraints(max_length=128, pattern=r"^\S*$")]
Word64 = Annotated[str, StringConstraints(max_length=64, pattern=r"^\S*$")]
Word32 = Annotated[str, StringConstraints(max_length=32, pattern=r"^\S*$")]
Comment = Annotated[str, StringConstraints(max_length=256)]


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _blank_none(value: object) -> object:
    """An empty optional number (`timeout=`, `rule=`) means "not given"."""
    return None if isinstance(value, str) and not value.strip() else value


def _rule_number(value: object) -> object:
    """resolveDIDRule's `rule`: the spec's default is written "I" (rule 1)."""
    if isinstance(value, str) and value.strip().upper() in ("", "I"):
        return 1
    return value


Policy = Annotated[Literal["ACCEPT", "REJECT"], BeforeValidator(_upper)]
Condition = Annotated[
    Literal["", "SUCCESS", "UNSUCCESS", "BUSY", "NOANSWER", "UNAVAIL", "INPUT"], BeforeValidator(_upper)
]
Source = Annotated[Literal["number", "any", "all"], BeforeValidator(_lower)]
Position = Annotated[Literal["start", "end"], BeforeValidator(_lower)]
RuleNumber = Annotated[int, BeforeValidator(_rule_number), Field(ge=1, le=2**31 - 1)]
Timeout = Annotated[int | None, BeforeValidator(_blank_none), Field(ge=0, le=86400)]
OptionalInt = Annotated[Int | None, BeforeValidator(_blank_none)]


class AddDIDParams(Params):
    did: Str
    owner: Str
    comment: Comment = ""
    cost: Amount = Decimal("0.00")
    expiration: Str = ""


@REGISTRY.method(
    "addDID",
    level=22, params=AddDIDParams, returns="bool", invalidates=(NS_PROFILES,),
    aliases=Aliases(vcs=("dids.add",), billmgr=("did.edit#create",), elname="did"),
)
async def add_did(ctx: CallContext[LedgerContext], p: AddDIDParams) -> bool:
    await dids.add_did(
        ctx.services,
        ctx.generations,
        ctx.require_actor(),
        did=p.did,
        owner=p.owner,
        comment=p.comment,
        cost=p.cost,
        expiration=p.expiration,
    )
    return True


class AddDIDRuleParams(Params):
    did: Str
    source: Source
    pattern: Word
    policy: Policy
    sms_action: Word64 = ""
    sms_destination: Word = ""
    action: Word64 = ""
    server: Word = ""
    destination: Word
    callerid: Word64 = ""
    timeout: Timeout = None
    condition: Condition = ""
    input: Word64 = ""
    position: Position = "start"


@REGISTRY.method(
    "addDIDRule",
    level=1, params=AddDIDRuleParams, returns="bool", invalidates=(NS_PROFILES,),
    aliases=Aliases(vcs=("dids.addRule",), billmgr=("didrule.edit#create",), plid="did"),
)
async def add_did_rule(ctx: CallContext[LedgerContext], p: AddDIDRuleParams) -> bool:
    rule = NewRule(
        source=p.source,
        pattern=p.pattern,
        policy=p.policy,
        sms_action=p.sms_action,
        sms_destination=p.sms_destination,
        action=p.action,
        server=p.server,
        destination=p.destination,
        callerid=p.callerid,
        timeout=p.timeout,
        condition=p.condition,
        input=p.input,
    )
    await did_rules.add_rule(
        ctx.services, ctx.generations, ctx.require_actor(), did=p.did, rule=rule, position=p.position
    )
    return True


class GetDIDRulesParams(Params):
    did: Str
    rule: OptionalInt = None


@REGISTRY.method(
    "getDIDRules",
    level=1, params=GetDIDRulesParams, returns="json",
    aliases=Aliases(vcs=("dids.rules",), billmgr=("didrule",), plid="did"),
)
async def get_did_rules(ctx: CallContext[LedgerContext], p: GetDIDRulesParams) -> list[dict[str, Any]]:
    return await did_rules.list_rules(
        ctx.services, ctx.generations, ctx.require_actor(), did=p.did, number=p.rule
    )


class ResolveDIDRuleParams(Params):
    did: Str
    rule: RuleNumber = 1
    callerid: Str
    status: Str
    input: Str = ""


@REGISTRY.method("resolveDIDRule", level=50, params=ResolveDIDRuleParams, returns="text")
async def resolve_did_rule(ctx: CallContext[LedgerContext], p: ResolveDIDRuleParams) -> TextAnswer:
    resolved = await did_rules.resolve(
        ctx.services,
        ctx.generations,
        key_owner=ctx.key.owner,
        did=p.did,
        start=p.rule,
        callerid=p.callerid,
        status=p.status,
        given_input=p.input,
        # Over FastAGI the first applicable rule is returned at once: one round trip.
        first_match=ctx.transport == "agi",
    )
    return _answer(resolved, p.callerid)


def _word(value: object) -> str:
    """A field of the text line; '-' stands for an empty one so the line keeps 10 words."""
    text = "" if value is None else str(value)
    return text or "-"


def _answer(resolved: Resolved, callerid: str) -> TextAnswer:
    resolution = resolved.resolution
    if resolution.kind == "SKIP":
        return TextAnswer(text=f"SKIP {resolution.next_rule}", result="SKIP")
    rule = resolution.rule
    if resolution.kind == "FIN" or rule is None:
        return TextAnswer(text="FIN", result="FIN")
    timeout = "" if rule.timeout is None else str(rule.timeout)
    words = (
        "OK",
        rule.policy,
        resolved.owner_extension,
        rule.action,
        rule.server,
        rule.destination,
        rule.callerid,  # kept verbatim (TRANSIT) as in the spec's example
        timeout,
        rule.sms_action,
        rule.sms_destination,
    )
    fields = {
        "CALLGATE_RULE": str(rule.position),
        "CALLGATE_POLICY": rule.policy,
        "CALLGATE_OWNER": resolved.owner_extension,
        "CALLGATE_ACTION": rule.action,
        "CALLGATE_SERVER": rule.server,
        "CALLGATE_DESTINATION": rule.destination,
        # The channel gets the caller ID to present, TRANSIT already replaced.
        "CALLGATE_CALLERID": did_rules.caller_id_for(rule, callerid),
        "CALLGATE_TIMEOUT": timeout,
        "CALLGATE_SMS_ACTION": rule.sms_action,
        "CALLGATE_SMS_DESTINATION": rule.sms_destination,
    }
    return TextAnswer(text=" ".join(_word(w) for w in words), result="OK", fields=fields)
