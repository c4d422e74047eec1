"""createCallback: two calls joined, each through the normal call path.

One AMI `Originate` (async) of a Local channel into the dialplan's `[callgate-callback]`
(dialplan/extensions.conf):

- its `;2` half runs `callgate-callback,<destination1>,1`, which goes to `callgate-outbound`
  as the user (`CG_LOGIN`): callPrepare (a hold), Dial, and the hangup handler's
  callFinish (the CDR) — leg 1 is an ordinary call;
- when leg 1 answers, Asterisk continues the `;1` half at `callgate-callback,leg2,1`, which
  does the same for destination2 (its own callPrepare, hold, Dial and callFinish) and is
  bridged to leg 1 through the Local pair.

So neither leg can spend money the account does not have (each is held like any call,
leg 2 after leg 1's hold), and a leg 2 that is declined, busy or unanswered is closed by
its own hangup handler, which releases its hold. `/n` keeps the Local pair in the call
(Asterisk would otherwise optimise it away once both halves are bridged, and the `;2`
half's hangup handler would bill leg 1 at that moment). The variables given to the
Originate reach both halves (a Local channel copies `;1`'s variables to `;2`):
`CG_LOGIN`, `CG_CALLBACK` (an id, on both legs' channels: the channel registry sees it in
their VarSet events and the holds of both legs join one live call), `CG_CALLBACK_DEST2`,
`CG_CALLBACK_CALLERID`, `CG_CALLBACK_PITCH`.

The answer: True when leg 1 answered (Asterisk's `OriginateResponse` Success), False
when it did not (busy, no answer, declined by callPrepare: Reason says which).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from billing_core.asterisk.errors import AsteriskRefused, AsteriskUnavailable
from billing_core.asterisk.service import AmiService
from billing_core.asterisk.wire import field
from billing_core.errors import ApiError, ErrorCode

log = structlog.get_logger(__name__)

CALLBACK_CONTEXT = "callgate-callback"
LEG2_EXTEN = "leg2"
PREPARE_MARGIN_S = 10  # Originate's wait for leg 1: ring time-out + this (callPrepare, routes tried)
_NUMBER = re.compile(r"[0-9]{1,32}")  # the dialplan's `_X.` pattern: digits only
_CALLERID = re.compile(r"[0-9+]{0,32}")
# OriginateResponse Reason: the AST_CONTROL_* Asterisk ended the attempt with
REASONS = {"0": "failed", "1": "hung up", "3": "no answer", "4": "answered", "5": "busy", "8": "congestion"}


@dataclass(frozen=True, slots=True)
class Callback:
    login: str  # what the dialplan's callPrepare logs in with: the user's SIP extension
    destination1: str
    destination2: str
    callerid: str = ""  # empty: callPrepare takes the profile's caller ID
    pitch: int | None = None

    def checked(self) -> Callback:
        for name, number in (("destination1", self.destination1), ("destination2", self.destination2)):
            if not _NUMBER.fullmatch(number):
                raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{name} must be 1 to 32 digits")
        if not _CALLERID.fullmatch(self.callerid):
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "callerid must be up to 32 digits (or +)")
        if self.pitch is not None and not 1 <= self.pitch <= 6:
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "epitch must be 1 to 6")
        return self


def originate_fields(cb: Callback, callback_id: str, ring_s: int) -> dict[str, object]:
    """The Originate action's headers (ActionID is added when it is sent)."""
    variables = [
        f"CG_LOGIN={cb.login}",
        f"CG_CALLBACK={callback_id}",
        f"CG_CALLBACK_DEST2={cb.destination2}",
        f"CG_CALLBACK_CALLERID={cb.callerid}",
        f"CG_CALLBACK_PITCH={'' if cb.pitch is None else cb.pitch}",
    ]
    fields: dict[str, object] = {
        "Channel": f"Local/{cb.destination1}@{CALLBACK_CONTEXT}/n",
        "Context": CALLBACK_CONTEXT,
        "Exten": LEG2_EXTEN,
        "Priority": "1",
        "Timeout": str((ring_s + PREPARE_MARGIN_S) * 1000),
        "Async": "true",
        "Variable": variables,
    }
    if cb.callerid:
        fields["CallerID"] = cb.callerid
    return fields


def pick_server(ami: AmiService, accounts: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(server, SIP extension): the first of the user's SIP accounts (extension, sip_server)
    whose server has AMI. None has: E_ASTERISK_QUERY_ERROR (no SIP account at all:
    E_INITIATE_ASTERISK_CALL_FAIL, there is nothing to log the legs in with)."""
    if not accounts:
        raise ApiError(ErrorCode.E_INITIATE_ASTERISK_CALL_FAIL, "the user has no SIP account to call back from")
    first: AsteriskUnavailable | None = None
    for extension, sip_server in accounts:
        try:
            return ami.for_sip_server(sip_server).name, extension
        except AsteriskUnavailable as exc:
            first = first or exc
    assert first is not None
    raise first


async def create_callback(ami: AmiService, server: str, cb: Callback, *, ring_s: int, margin_s: float) -> bool:
    """Originate leg 1 and wait for Asterisk's verdict on it (at most the Originate's own
    time-out + margin_s). E_ASTERISK_QUERY_ERROR: the server is not connected or did not
    answer; E_INITIATE_ASTERISK_CALL_FAIL: it refused the Originate."""
    callback_id = secrets.token_hex(8)
    fields = originate_fields(cb.checked(), callback_id, ring_s)
    wait_s = ring_s + PREPARE_MARGIN_S + margin_s
    try:
        answer: Any = await ami.action(server, "Originate", fields, timeout_s=wait_s)
    except AsteriskRefused as exc:
        raise ApiError(ErrorCode.E_INITIATE_ASTERISK_CALL_FAIL, f"Originate refused: {exc.message}") from None
    last = answer[-1] if isinstance(answer, list) else answer
    verdict, reason = field(last, "Response"), field(last, "Reason")
    answered = field(last, "Event") == "OriginateResponse" and verdict == "Success"
    log.info("asterisk.callback", server=server, callback=callback_id, answered=answered,
             reason=REASONS.get(reason, reason))  # fmt: skip
    return answered
