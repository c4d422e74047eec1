"""Prometheus metrics of the FastAGI server, exposed with the HTTP shim's on GET /metrics.

One count and one duration per session, taken when the session is over. Every label value
is bounded: a script Asterisk asked for that callgate does not serve is "-", as are a
CALLGATE_RESULT or CALLGATE_ERROR that is not one of callgate's own (there are none, but a
label must never grow with what a peer sends).
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import Counter, Histogram

from billing_core.errors import ErrorCode
from fastagi import contract

NONE: Final = "-"
_RESULTS: Final = frozenset({
    contract.RESULT_ALLOWED, contract.RESULT_DECLINED, contract.RESULT_SAVED, contract.RESULT_OK,
    contract.RESULT_FIN, contract.RESULT_SPOOLED, contract.RESULT_FAILED,
})  # fmt: skip
_ERRORS: Final = frozenset(code.value for code in ErrorCode)
# How a session ends (fastagi.session's outcomes): answered, refused (Asterisk rejected a
# command), peer_gone, env_timeout, reply_timeout, protocol_error, error, cancelled.

SESSIONS = Counter(
    "callgate_agi_sessions",
    "FastAGI sessions by script, the CALLGATE_RESULT and CALLGATE_ERROR sent, and how the session ended",
    ["script", "result", "error", "outcome"],
)
DURATION = Histogram(
    "callgate_agi_session_duration_seconds",
    "From the accepted connection to its close, by script: what the dialplan waited",
    ["script"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


# The labelled children by (bounded) label values: `.labels()` costs ~10 µs a call (it
# checks and locks), a dict lookup well under one. The label sets are closed, so is this.
_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def session_done(script: str, result: str, error: str, outcome: str, duration_s: float) -> None:
    key = (
        script if script in contract.SCRIPTS else NONE,
        result if result in _RESULTS else NONE,
        error if error in _ERRORS else NONE,
        outcome,
    )
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            SESSIONS.labels(script=key[0], result=key[1], error=key[2], outcome=outcome),
            DURATION.labels(script=key[0]),
        )
    children[0].inc()
    children[1].observe(duration_s)
