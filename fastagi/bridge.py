"""FastAGI → registry: turn a decoded AGI request into a registry call and its outcome
into channel variables. It parses no arguments and checks no permissions: the
dispatcher does (the Asterisk server is identified by its address, see
billing_core.api.dispatch).

Every variable of the script is set on every answer (empty when not applicable), so a
dialplan that loops (failover, DID rule chains) never reads a value left over from the
previous round.

A valid callFinish answers `Saved` or `Spooled`, nothing else: one that cannot reach the
database, times out, or meets any failure that is not a verdict on the request itself (an
unexpected exception: a bug, or a connection state nothing maps yet) is written to the
on-disk spool and answered `CALLGATE_RESULT=Spooled` (the dialplan has nothing to do: the
charge is applied when the database is back, exactly once, since callFinish is idempotent
per call and priority). `Failed` is left for requests that can never succeed (missing or
invalid arguments, unknown login, no route and no hold). Any other decision during an
outage is declined with E_SQL_ERROR: callgate fails closed.
"""

from __future__ import annotations

import asyncio

import structlog

from billing_core import deadline
from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.catalog.registry import TextAnswer
from billing_core.errors import ApiError, ErrorCode, UnexpectedFailure
from billing_core.spool import ReplayReport, ReplayVerdict, Spool
from fastagi import contract
from fastagi.messages import AGIAnswer, AGIRequest

log = structlog.get_logger(__name__)

REPLY_MARGIN_S = 0.5  # see billing_core.ledger.pg_call_ledger.REPLY_MARGIN_S
# How an attempt whose Allowed never reached a live channel is closed: as the dialplan's
# hangup handler closes a prior that never reached Dial (empty DIALSTATUS, answered_ms=0),
# so the CDR is the same whichever of the two comes first.
UNDELIVERED_STATUS = ""
# What of callPrepare's arguments identifies the attempt again in its callFinish.
_RELEASE_ARGS = ("login", "destination", "prior", "callerid", "call_id")


def failure_result(script: str) -> str:
    """What CALLGATE_RESULT says when a script could not run at all."""
    return contract.RESULT_FAILED if script == contract.SCRIPT_CALL_FINISH else contract.RESULT_DECLINED


def _blank(script: str) -> dict[str, str]:
    names = contract.COMMON_VARIABLES + contract.SCRIPT_VARIABLES.get(script, ())
    return dict.fromkeys(names, "")


def answer_for_error(script: str, error: ApiError) -> AGIAnswer:
    variables = _blank(script)
    result = failure_result(script)
    variables[contract.VAR_RESULT] = result
    variables[contract.VAR_ERROR] = error.code.value
    variables[contract.VAR_ANSWER] = f"{result} {error.code.value}"
    return AGIAnswer(variables)


def answer_for_text(script: str, text: TextAnswer) -> AGIAnswer:
    variables = _blank(script)
    variables[contract.VAR_RESULT] = text.result
    variables[contract.VAR_ERROR] = text.error
    variables[contract.VAR_ANSWER] = text.text
    allowed = set(variables)
    for name, value in text.fields.items():
        if name in allowed:
            variables[name] = value
    return AGIAnswer(variables)


def answer_for_outcome(script: str, outcome: Outcome) -> AGIAnswer:
    if outcome.error is not None:
        return answer_for_error(script, outcome.error)
    if isinstance(outcome.value, TextAnswer):
        return answer_for_text(script, outcome.value)
    # Every FastAGI script is a text method; anything else is a programming error.
    log.error("agi.unexpected_value", script=script, kind=type(outcome.value).__name__)
    return answer_for_error(script, ApiError(ErrorCode.E_LUA_EXCEPTION))


class AGIBridge:
    """The FastAGI server's dispatcher: script name = registry method name."""

    def __init__(self, dispatcher: Dispatcher, spool: Spool | None = None, *, timeout_s: float = 4.0) -> None:
        self.dispatcher = dispatcher
        self.spool = spool
        self.timeout_s = timeout_s

    async def __call__(self, request: AGIRequest) -> AGIAnswer:
        script = request.script
        if script not in contract.SCRIPTS:
            log.warning("agi.unknown_script", script=script[:64], peer=request.peer_ip)
            return answer_for_error(
                script, ApiError(ErrorCode.E_UNKNOWN_METHOD, f"unknown script {script[:64]}")
            )
        args = dict(request.args)
        try:
            # The store must have decided a margin before the bridge stops waiting, so that
            # its verdict (done, or nothing written) is what the dialplan is told.
            with deadline.within(self.timeout_s - min(REPLY_MARGIN_S, self.timeout_s / 2)):
                async with asyncio.timeout(self.timeout_s):
                    outcome = await self.dispatcher.call(script, args, _credentials(request))
        except TimeoutError:
            # A store that hangs is an unavailable store: decline, or spool a callFinish.
            log.warning("agi.dispatch_timeout", script=script, timeout_s=self.timeout_s)
            outcome = Outcome(error=ApiError(ErrorCode.E_SQL_ERROR, "backend timed out"))
        except Exception as exc:  # the dispatcher maps its own; this is a backstop that still spools
            log.error("agi.dispatch_failed", script=script, error=type(exc).__name__)
            outcome = Outcome(error=UnexpectedFailure())
        if self._must_spool(script, outcome):
            assert outcome.error is not None
            return self._spool(request, args, outcome.error.code)
        return answer_for_outcome(script, outcome)

    async def undelivered(self, request: AGIRequest, variables: dict[str, str]) -> None:
        """The FastAGI server's word that an answer never reached a live channel (a HANGUP
        came before its last reply, or the connection was gone before it was sent). An
        `Allowed` callPrepare then holds money for a call that cannot be dialled: the attempt
        is closed as unanswered (empty status, 0 s) through callFinish itself, so it is one
        transaction in the ledger (CDR, no charge, hold ended), spooled if the database is
        away, and idempotent with the dialplan's own callFinish for the same (call, prior)."""
        allowed = variables.get(contract.VAR_RESULT) == contract.RESULT_ALLOWED
        if request.script != contract.SCRIPT_CALL_PREPARE or not allowed:
            return
        args = {name: request.args[name] for name in _RELEASE_ARGS if name in request.args}
        args |= {"length": "0", "status": UNDELIVERED_STATUS, "answered_ms": "0"}
        finish = AGIRequest(contract.SCRIPT_CALL_FINISH, args, request.env, request.peer_ip)
        answer = await self(finish)
        log.info("agi.hold_released_after_hangup", call_uid=request.uniqueid, prior=args.get("prior", "1"),
                 result=answer.variables.get(contract.VAR_RESULT, ""))

    def _must_spool(self, script: str, outcome: Outcome) -> bool:
        return (
            self.spool is not None
            and script == contract.SCRIPT_CALL_FINISH
            and outcome.error is not None
            and (outcome.error.code is ErrorCode.E_SQL_ERROR or isinstance(outcome.error, UnexpectedFailure))
        )

    def _spool(self, request: AGIRequest, args: dict[str, str], code: ErrorCode) -> AGIAnswer:
        assert self.spool is not None
        self.spool.append(
            {"method": request.script, "args": args, "peer_ip": request.peer_ip, "call_uid": request.uniqueid}
        )
        log.warning("agi.call_finish_spooled", call_uid=request.uniqueid, peer=request.peer_ip, error=code.value)
        variables = _blank(request.script)
        variables[contract.VAR_RESULT] = contract.RESULT_SPOOLED
        variables[contract.VAR_ERROR] = code.value  # why it was spooled: an outage, or unexpected
        variables[contract.VAR_ANSWER] = f"{contract.RESULT_SPOOLED} {code.value}"
        return AGIAnswer(variables)

    async def replay_spool(self) -> ReplayReport | None:
        """Apply spooled callFinish requests through the registry, oldest first."""
        if self.spool is None:
            return None
        return await self.spool.replay(self._replay_one)

    async def _replay_one(self, item: dict[str, object]) -> str:
        args = item.get("args")
        if not isinstance(args, dict):
            return ReplayVerdict.FAILED
        cred = Credentials(
            peer_ip=str(item.get("peer_ip", "")),
            transport="agi",
            apikey=None,
            call_uid=str(item.get("call_uid") or "") or None,
        )
        outcome = await self.dispatcher.call(str(item.get("method")), {str(k): str(v) for k, v in args.items()}, cred)
        if outcome.error is None:
            log.info("agi.spool_replayed", call_uid=cred.call_uid)
            return ReplayVerdict.DONE
        if outcome.error.code is ErrorCode.E_SQL_ERROR:
            return ReplayVerdict.RETRY
        # An unexpected failure again (not an outage: those are E_SQL_ERROR) goes aside to
        # failed/ for an operator rather than stopping every replay behind it.
        log.error("agi.spool_rejected", call_uid=cred.call_uid, error=outcome.error.code.value)
        return ReplayVerdict.FAILED


def _credentials(request: AGIRequest) -> Credentials:
    return Credentials(
        peer_ip=request.peer_ip,
        transport="agi",
        apikey=None,
        call_uid=request.uniqueid or None,
    )
