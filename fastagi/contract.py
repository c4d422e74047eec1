"""The contract between callgate and an operator's dialplan.

These names are what `dialplan/extensions.conf` reads; renaming one breaks every
operator's dialplan, so they live here once and the dialplan test checks against them.
"""

from __future__ import annotations

from typing import Final

# FastAGI scripts callgate answers (the part of agi_network_script before '?').
SCRIPT_CALL_PREPARE: Final = "callPrepare"
SCRIPT_CALL_FINISH: Final = "callFinish"
SCRIPT_AUTHORIZE_CALL: Final = "authorizeCall"
SCRIPT_RESOLVE_DID_RULE: Final = "resolveDIDRule"
SCRIPT_GET_TEXT_BALANCE: Final = "getTextBalance"  # CALLGATE_ANSWER: the list for Playback()

# Variables set on every answer.
VAR_RESULT: Final = "CALLGATE_RESULT"
VAR_ERROR: Final = "CALLGATE_ERROR"
VAR_ANSWER: Final = "CALLGATE_ANSWER"

COMMON_VARIABLES: Final[tuple[str, ...]] = (VAR_RESULT, VAR_ERROR, VAR_ANSWER)

# Variables each script sets in addition to the common ones.
SCRIPT_VARIABLES: Final[dict[str, tuple[str, ...]]] = {
    SCRIPT_CALL_PREPARE: (
        "CALLGATE_MAXTIME",
        "CALLGATE_DESTINATION",
        "CALLGATE_CALLERID",
        "CALLGATE_DIRECTION",
        "CALLGATE_ROUTE_PREFIX",
        "CALLGATE_ROUTE",
        "CALLGATE_PITCH_RX",
        "CALLGATE_PITCH_TX",
        # Seconds the dialplan lets the call ring (Dial's time-out); the hold is sized for
        # it (CALLGATE_RING_TIMEOUT_S). FastAGI only: not part of the spec's text answer.
        "CALLGATE_RINGTIME",
    ),
    SCRIPT_CALL_FINISH: ("CALLGATE_COST", "CALLGATE_CURRENCY"),
    SCRIPT_AUTHORIZE_CALL: ("CALLGATE_EXTENSION",),
    SCRIPT_RESOLVE_DID_RULE: (
        "CALLGATE_RULE",
        "CALLGATE_POLICY",
        "CALLGATE_OWNER",
        "CALLGATE_ACTION",
        "CALLGATE_SERVER",
        "CALLGATE_DESTINATION",
        "CALLGATE_CALLERID",
        "CALLGATE_TIMEOUT",
        "CALLGATE_SMS_ACTION",
        "CALLGATE_SMS_DESTINATION",
    ),
    SCRIPT_GET_TEXT_BALANCE: (),
}

SCRIPTS: Final[tuple[str, ...]] = tuple(SCRIPT_VARIABLES)

# CALLGATE_RESULT values.
RESULT_ALLOWED: Final = "Allowed"
RESULT_DECLINED: Final = "Declined"
RESULT_SAVED: Final = "Saved"
RESULT_OK: Final = "OK"
RESULT_FIN: Final = "FIN"
# callFinish could not be written to the database right now; the CDR is spooled on
# disk and will be charged when the database is back (nothing is lost).
RESULT_SPOOLED: Final = "Spooled"
# callFinish failed for a reason other than an unavailable database (e.g. bad input).
RESULT_FAILED: Final = "Failed"


def all_variables() -> frozenset[str]:
    """Every variable name callgate may set on a channel."""
    names: set[str] = set(COMMON_VARIABLES)
    for names_of_script in SCRIPT_VARIABLES.values():
        names.update(names_of_script)
    return frozenset(names)
