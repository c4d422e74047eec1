"""Whole seconds billed from a call's talk time in milliseconds (docs/billing.md, "Talk time
and whole seconds"; docs/decisions.md, "Whole seconds").

Asterisk's CDR `billsec` (main/cdr.c, cdr_object_get_billsec) truncates the milliseconds
between answer and end, unless cdr.conf sets `initiatedseconds=yes`, which adds one second when
the remainder is 500 ms or more. The default here is the same truncation, so callgate's billed
length and an operator's Asterisk CDRs reconcile second for second.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Final, Literal, get_args

BillsecRounding = Literal["truncate", "initiatedseconds", "ceiling"]
ROUNDINGS: Final[tuple[str, ...]] = get_args(BillsecRounding)
DEFAULT_ROUNDING: Final[BillsecRounding] = "truncate"


def parse_rounding(value: str) -> BillsecRounding:
    """CALLGATE_BILLSEC_ROUNDING: one of ROUNDINGS (empty = the default); anything else is a
    start-up error, never a silent fallback that would bill differently from what was set."""
    text = value.strip().lower() or DEFAULT_ROUNDING
    if text == "truncate":
        return "truncate"
    if text == "initiatedseconds":
        return "initiatedseconds"
    if text == "ceiling":
        return "ceiling"
    raise ValueError(f"CALLGATE_BILLSEC_ROUNDING must be one of {', '.join(ROUNDINGS)}, got {value!r}")


def whole_seconds(ms: int, rounding: BillsecRounding = DEFAULT_ROUNDING) -> int:
    """`ms` (>= 0) as whole seconds: truncate (Asterisk's billsec), initiatedseconds (Asterisk's
    cdr.conf option: a remainder of 500 ms or more counts a second), ceiling (any started second)."""
    seconds, rest = divmod(max(ms, 0), 1000)
    if rounding == "ceiling":
        return seconds + (rest > 0)
    if rounding == "initiatedseconds":
        return seconds + (rest >= 500)
    return seconds


def length_ms(length_s: Decimal) -> int:
    """The dialplan's `length` (seconds, maybe with a fraction) in whole milliseconds."""
    return int((length_s * 1000).to_integral_value(rounding=ROUND_FLOOR))
