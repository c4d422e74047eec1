"""API methods: callPrepare and callFinish (call control, level 50; see docs/billing.md).

Arguments are the spec's, plus callgate's extras: `call_id` (HTTP: the call's identity
when there is no Asterisk uniqueid; without it every request is a new call) and, on
callFinish, `answered_ms` (ANSWEREDTIME_MS) and `cause` (HANGUPCAUSE).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, StringConstraints

from billing_core.calls import control as calls
from billing_core.calls import http_pairing
from billing_core.calls.control import CallAnswer, Caller
from billing_core.calls.supervision import SupervisionContext, supervised_slice
from billing_core.catalog.params import Int, Num, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext, TextAnswer
from billing_core.ledger.context import LedgerContext


def _empty_is_none(value: Any) -> Any:
    """Dialplans pass unset variables as empty values (`answered_ms=`): same as absent."""
    return None if isinstance(value, str) and not value.strip() else value


Prior = Annotated[int, Field(ge=1, le=1000)]
Seconds = Annotated[Num, Field(ge=0, le=2**31 - 1)]
Millis = Annotated[Int | None, BeforeValidator(_empty_is_none), Field(ge=0)]
# The length applies to the string only: on `str | None` pydantic applied it to the None an
# empty `call_id=` became and raised TypeError (E_LUA_EXCEPTION, HTTP 500), not a verdict.
CallId = Annotated[Annotated[str, StringConstraints(max_length=64)] | None, BeforeValidator(_empty_is_none)]


class CallPrepareParams(Params):
    callerid: Str | None = None
    destination: Str
    prior: Prior = 1
    from_originate: Str | None = None  # accepted, not used
    source: Str | None = None  # accepted, not used
    originated_by: Str | None = None  # accepted, not used
    call_id: CallId = None


class CallFinishParams(Params):
    callerid: Str | None = None
    destination: Str
    prior: Prior = 1
    length: Seconds
    status: Annotated[str, StringConstraints(max_length=32)]
    is_did: Annotated[str, StringConstraints(max_length=32)] = ""
    answered_ms: Millis = None
    cause: Annotated[str, StringConstraints(max_length=8)] = ""
    call_id: CallId = None


# callPrepare's context also has the AMI service (supervision): the helpers take either.
L = TypeVar("L", bound=LedgerContext)


def _http_unidentified(ctx: CallContext[L], call_id: str | None) -> bool:
    """An HTTP request that names no call (the spec's own examples): see http_pairing."""
    return ctx.call_uid is None and not call_id


def _text(answer: CallAnswer) -> TextAnswer:
    # Field by field: asdict deep-copies, and this runs on every call decision.
    return TextAnswer(answer.text, answer.result, answer.ok, answer.error, dict(answer.fields))


async def _caller(ctx: CallContext[L], callerid: str | None) -> Caller:
    return await calls.find_caller(
        ctx.services,
        ctx.generations,
        key=ctx.key,
        user=ctx.require_actor(),
        login=ctx.raw.get("login", ""),
        callerid=callerid,
    )


@REGISTRY.method("callPrepare", level=50, params=CallPrepareParams, returns="text")
async def call_prepare(ctx: CallContext[SupervisionContext], p: CallPrepareParams) -> TextAnswer:
    caller = await _caller(ctx, p.callerid)
    answer = await calls.prepare_call(
        ctx.services,
        ctx.generations,
        caller,
        destination=p.destination,
        prior=p.prior,
        call_uid=(
            http_pairing.new_http_call_uid()
            if _http_unidentified(ctx, p.call_id)
            else calls.call_uid_for(ctx.call_uid, p.call_id)
        ),
        slice_s=supervised_slice(ctx.services, transport=ctx.transport, peer_ip=ctx.peer_ip),
    )
    return _text(answer)


@REGISTRY.method("callFinish", level=50, params=CallFinishParams, returns="text")
async def call_finish(ctx: CallContext[LedgerContext], p: CallFinishParams) -> TextAnswer:
    caller = await _caller(ctx, p.callerid)
    call_uid = None
    if _http_unidentified(ctx, p.call_id):
        call_uid = await http_pairing.take_oldest_hold(
            ctx.services.db,
            user_id=caller.user.id,
            destination=calls.normalize_destination(p.destination),
            prior=p.prior,
        )
    report = calls.Finish(
        destination=p.destination,
        prior=p.prior,
        call_uid=call_uid or calls.call_uid_for(ctx.call_uid, p.call_id),
        length_s=Decimal(p.length),
        answered_ms=p.answered_ms,
        status=p.status,
        cause=p.cause,
        is_did=p.is_did,
    )
    return _text(await calls.finish_call(ctx.services, ctx.generations, caller, report))
