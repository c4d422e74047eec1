"""The arguments of callPrepare and callFinish, checked and normalised: the destination's
digits, the DIALSTATUS, the length to bill on and the call's id.

Pure functions of their arguments, apart from billing_core.calls.control (which decides
and charges calls) so that it reads in one sitting; calls re-exports them, and the API
layer (billing_core.calls.calls_api) calls them through it.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

from billing_core.billsec import DEFAULT_ROUNDING, BillsecRounding, length_ms, whole_seconds
from billing_core.errors import ApiError, ErrorCode

__all__ = ["call_uid_for", "is_answered", "normalize_destination", "reported_length"]

ANSWERED = "ANSWER"
DIAL_STATUSES = frozenset(
    {"ANSWER", "BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE", "INVALIDARGS"}
)
_CODED_STATUS = re.compile(r"(\d{1,3})([A-Za-z]+)")  # the spec's form: 0CANCEL, 200ANSWER
_NUMBER = re.compile(r"\+?(\d{1,32})")
MAX_CALL_UID = 64


def normalize_destination(raw: str) -> str:
    """Digits only (a leading '+' is dropped); anything else is E_INVALID_ARGUMENT."""
    match = _NUMBER.fullmatch(raw.strip())
    if match is None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "destination must be digits, optionally after '+'")
    return match.group(1)


def is_answered(status: str) -> bool:
    """Validate a DIALSTATUS (ANSWER, BUSY, …) or the spec's coded form (0CANCEL); True for ANSWER.

    An empty status is a call that never reached Dial (the caller hung up between the hangup
    handler's push and Dial, or during callPrepare): not answered, so the attempt is closed
    at 0 and its hold released, never refused (a refused close would keep the hold)."""
    if not status:
        return False
    word = status.upper()
    coded = _CODED_STATUS.fullmatch(status)
    if coded is not None:
        word = coded.group(2).upper()
    elif word not in DIAL_STATUSES:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "status must be a DIALSTATUS or <digits><WORD>")
    return word == ANSWERED


def reported_length(
    length_s: Decimal, answered_ms: int | None, rounding: BillsecRounding = DEFAULT_ROUNDING
) -> int:
    """Whole seconds to bill on: `answered_ms` (the talk time the dialplan measured) when
    positive, else `length`, in whole seconds by CALLGATE_BILLSEC_ROUNDING (billsec.py)."""
    if answered_ms is not None and answered_ms > 0:
        return whole_seconds(answered_ms, rounding)
    return whole_seconds(length_ms(length_s), rounding)


def call_uid_for(transport_uid: str | None, call_id: str | None) -> str:
    """The Asterisk call (agi_uniqueid), else the HTTP `call_id`, else a fresh uuid4."""
    uid = transport_uid or call_id or uuid.uuid4().hex
    if len(uid) > MAX_CALL_UID:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "call id longer than 64 characters")
    return uid
