"""DIDTables rules: adding, listing and walking a DID's rule chain (resolveDIDRule).

A rule applies to a call when
- its filter accepts the caller ID: source `number` matches `pattern` against the caller
  ID with SQL-LIKE wildcards (`%` any run, `_` one character, everything else literal,
  case-insensitive; an empty pattern or `%` accepts every caller); sources `any` and
  `all` accept every caller; any other source (not creatable through addDIDRule, but
  possible in imported data) accepts no one;
- its condition accepts the outcome of the previous attempt (`status`, an Asterisk
  DIALSTATUS, optionally with a numeric prefix such as `0CANCEL` or `99INPUT`):
  "" (unconditional) → the first attempt (empty status) and after any failure, not
  after ANSWER; SUCCESS → ANSWER; UNSUCCESS → any non-empty status but ANSWER;
  BUSY → BUSY; NOANSWER → NOANSWER or CANCEL; UNAVAIL → CHANUNAVAIL or CONGESTION;
  INPUT → 99INPUT with the caller's `input` equal to the rule's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import structlog
from sqlalchemy import func, select, update

from billing_core.clock import utcnow
from billing_core.directory.ownership import key_owner_serves
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.numbers.dids import (
    DIDRecord,
    DIDRule,
    Generations,
    did_record,
    require_managed_did,
    without_plus,
)
from billing_core.numbers.tables import did_rules, dids
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

SOURCES = ("number", "any", "all")  # the filters addDIDRule accepts
CONDITIONS = ("", "SUCCESS", "UNSUCCESS", "BUSY", "NOANSWER", "UNAVAIL", "INPUT")
TRANSIT = "TRANSIT"  # in a rule's callerid: replaced with the caller's number
# The actions the dialplan (dialplan/extensions.conf, callgate-inbound) runs, with the
# destination getDIDActions proposes for each; OWNER stands for the DID owner's first SIP
# extension (its user name when it has none).
OWNER = "<owner>"
VOICE_ACTIONS: dict[str, str] = {"call": OWNER, "playfile": "beep", "redirect": "", "forward": "", "disa": ""}
SMS_ACTIONS: dict[str, str] = {"internal": OWNER}

# Condition → the DIALSTATUS words (numeric prefix stripped) it accepts.
_CONDITION_STATUSES: dict[str, frozenset[str]] = {
    "BUSY": frozenset({"BUSY"}),
    "NOANSWER": frozenset({"NOANSWER", "CANCEL"}),
    "UNAVAIL": frozenset({"CHANUNAVAIL", "CONGESTION"}),
}


# ---------------------------------------------------------------------------------------
# Matching


def like_match(pattern: str, value: str) -> bool:
    """SQL-LIKE match of the whole `value`: `%` any run, `_` one character, the rest literal.

    Iterative two-pointer matching with backtracking to the last `%` only: O(len(pattern) ×
    len(value)) at worst, so a pattern like `%1%1%1%…` cannot stall the call path the way a
    backtracking regex could, and no character of the pattern is ever interpreted as regex.
    """
    pattern, value = pattern.casefold(), value.casefold()
    p = v = 0
    star_p, star_v = -1, 0
    while v < len(value):
        if p < len(pattern) and pattern[p] != "%" and (pattern[p] == "_" or pattern[p] == value[v]):
            p += 1
            v += 1
        elif p < len(pattern) and pattern[p] == "%":
            star_p, star_v = p, v
            p += 1
        elif star_p >= 0:
            star_v += 1  # let the last % swallow one more character
            p, v = star_p + 1, star_v
        else:
            return False
    return all(ch == "%" for ch in pattern[p:])


def source_accepts(rule: DIDRule, callerid: str) -> bool:
    if rule.source in ("any", "all"):
        return True
    if rule.source == "number":
        if rule.pattern == "" or like_match(rule.pattern, callerid):
            return True
        # Trunks often present E.164 with a "+"; callgate's numbers are digits, so a pattern
        # of digits (7901%) also matches +7901…, and a pattern written with "+" still can.
        return callerid.startswith("+") and like_match(rule.pattern, callerid[1:])
    return False


def status_word(status: str) -> str:
    """DIALSTATUS without its numeric prefix: '0CANCEL' → 'CANCEL', '99INPUT' → 'INPUT'."""
    return status.strip().upper().lstrip("0123456789")


def condition_accepts(rule: DIDRule, status: str, given_input: str) -> bool:
    word = status_word(status)
    condition = rule.condition
    if condition == "":
        return word != "ANSWER"
    if not word:
        return False  # a conditional rule never applies to the first attempt
    if condition == "SUCCESS":
        return word == "ANSWER"
    if condition == "UNSUCCESS":
        return word != "ANSWER"
    if condition == "INPUT":
        return word == "INPUT" and rule.input == given_input
    return word in _CONDITION_STATUSES.get(condition, frozenset())


def rule_applies(rule: DIDRule, callerid: str, status: str, given_input: str) -> bool:
    return source_accepts(rule, callerid) and condition_accepts(rule, status, given_input)


@dataclass(frozen=True, slots=True)
class Resolution:
    """OK with the rule that applies, SKIP to `next_rule`, or FIN (no rule left)."""

    kind: Literal["OK", "SKIP", "FIN"]
    rule: DIDRule | None = None
    next_rule: int | None = None


def walk(
    rules: tuple[DIDRule, ...],
    start: int,
    callerid: str,
    status: str,
    given_input: str,
    *,
    first_match: bool,
) -> Resolution:
    """Examine the rules from number `start` on (they are ordered by position).

    first_match=False is the HTTP form: only the first rule at or after `start` is
    examined; when it does not apply the answer is SKIP to the next rule (FIN if none).
    first_match=True (FastAGI) keeps walking until a rule applies, saving the dialplan
    its SKIP round trips.
    """
    candidates = [rule for rule in rules if rule.position >= start]
    for index, rule in enumerate(candidates):
        if rule_applies(rule, callerid, status, given_input):
            return Resolution("OK", rule=rule)
        if not first_match:
            if index + 1 < len(candidates):
                return Resolution("SKIP", next_rule=candidates[index + 1].position)
            return Resolution("FIN")
    return Resolution("FIN")


def caller_id_for(rule: DIDRule, callerid: str) -> str:
    """The caller ID to present: the rule's, with TRANSIT replaced by the caller's number."""
    return rule.callerid.replace(TRANSIT, callerid)


@dataclass(frozen=True, slots=True)
class Resolved:
    resolution: Resolution
    owner_extension: str  # the DID owner's first SIP extension, or its username


async def resolve(
    services: LedgerContext,
    gens: Generations,
    *,
    key_owner: str,
    did: str,
    start: int,
    callerid: str,
    status: str,
    given_input: str,
    first_match: bool,
) -> Resolved:
    """resolveDIDRule on the call path: everything is read through the cache."""
    record = await did_record(services, gens, without_plus(did))  # unknown or garbage: not found
    if record is None or not record.in_service(utcnow()):
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID in service")
    if not await key_owner_serves(services.profiles, gens, key_owner, record.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the DID is not served by this key")
    resolution = walk(record.rules, start, callerid, status, given_input, first_match=first_match)
    return Resolved(resolution, await owner_extension(services, gens, record.owner))


async def owner_extension(services: LedgerContext, gens: Generations, owner: str) -> str:
    user = await services.profiles.user_by(gens, "username", owner)
    if user is None:
        return owner
    extension = await services.profiles.first_extension_of(gens, user.id)
    return owner if extension is None else extension.sip_extension


# ---------------------------------------------------------------------------------------
# Administration (addDIDRule, getDIDRules)


@dataclass(frozen=True, slots=True)
class NewRule:
    """A rule as addDIDRule gives it: its fields are the did_rules columns (but did_id and
    position), and `DIDRule`'s but `position`."""

    source: str
    pattern: str
    policy: str
    sms_action: str
    sms_destination: str
    action: str
    server: str
    destination: str
    callerid: str
    timeout: int | None
    condition: str
    input: str


def check_new_rule(rule: NewRule) -> None:
    if rule.source not in SOURCES:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"source must be one of {', '.join(SOURCES)}")
    if rule.condition not in CONDITIONS:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "unknown condition")
    if rule.condition == "INPUT" and not rule.input:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: input (condition INPUT)")
    if rule.timeout is not None and rule.timeout < 0:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "timeout must not be negative")
    if rule.action and rule.action not in VOICE_ACTIONS:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"action must be one of {', '.join(VOICE_ACTIONS)}")
    if rule.sms_action and rule.sms_action not in SMS_ACTIONS:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"sms_action must be one of {', '.join(SMS_ACTIONS)}")


async def add_rule(
    services: LedgerContext,
    gens: Generations,
    actor: UserRecord,
    *,
    did: str,
    rule: NewRule,
    position: Literal["start", "end"],
) -> int:
    """addDIDRule: insert at the start (every rule moves down one) or at the end.

    Returns the new rule's number.
    """
    check_new_rule(rule)
    record = await require_managed_did(services, gens, actor, did)
    async with services.db.begin() as conn:
        # Serializes concurrent edits of one DID's chain on PostgreSQL (SQLite is serial).
        locked = await conn.execute(select(dids.c.id).where(dids.c.id == record.id).with_for_update())
        if locked.first() is None:  # deleted since the cached read
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID")
        if position == "start":
            await _shift_down(conn, record.id)
            number = 1
        else:
            last = (
                await conn.execute(select(func.max(did_rules.c.position)).where(did_rules.c.did_id == record.id))
            ).scalar()
            number = int(last or 0) + 1
        await conn.execute(did_rules.insert().values(did_id=record.id, position=number, **asdict(rule)))
    log.info("did_rules.added", did=did, rule=number, position=position, by=actor.username)
    return number


async def _shift_down(conn: Any, did_id: int) -> None:
    """position += 1 for every rule of the DID, without ever breaking the unique
    (did_id, position) constraint, which both databases check row by row: first move
    every rule to a negative number, then back to its new positive one."""
    mine = did_rules.c.did_id == did_id
    await conn.execute(update(did_rules).where(mine).values(position=-(did_rules.c.position + 1)))
    await conn.execute(update(did_rules).where(mine).values(position=-did_rules.c.position))


def rule_json(record: DIDRecord, rule: DIDRule) -> dict[str, Any]:
    """A rule in getDIDRules' shape (the spec example's keys, plus `input`)."""
    return {
        "timeout": rule.timeout,
        "server": rule.server,
        "did": record.did,
        "policy": rule.policy,
        "condition": rule.condition,
        "sms_action": rule.sms_action,
        "source": rule.source,
        "action": rule.action,
        "pattern": rule.pattern,
        "destination": rule.destination,
        "rule": rule.position,
        "callerid": rule.callerid,
        "input": rule.input,
    }


async def list_rules(
    services: LedgerContext, gens: Generations, actor: UserRecord, *, did: str, number: int | None
) -> list[dict[str, Any]]:
    """getDIDRules: every rule of the DID, or only rule `number` (E_NOT_EXIST if absent)."""
    record = await require_managed_did(services, gens, actor, did)
    rules = [rule for rule in record.rules if number is None or rule.position == number]
    if number is not None and not rules:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such rule")
    return [rule_json(record, rule) for rule in rules]
