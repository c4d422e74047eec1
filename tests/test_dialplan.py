"""Checks of dialplan/extensions.conf (tests/dialplan_check.py) against fastagi.contract and
Asterisk 22's behaviour as recorded in ../shared/agi (transcripts 015-027).

Every rule is shown to fire by mutating a copy of the file, and the dialplan as it was before
issue 9 (tests/fixtures/dialplan/extensions-before-issue-9.conf) must fail the rule of each
defect the real Asterisk showed, at the line that had it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fastagi import contract
from tests.dialplan_check import (
    ALL_RULES,
    DISA,
    HANGUP,
    INBOUND,
    OUTBOUND,
    R_ARGS,
    R_BILLED,
    R_CALLBACK,
    R_DIAL_STRING,
    R_DISA,
    R_FAIL_CLOSED,
    R_FAILOVER,
    R_HANDLER,
    R_NODES,
    R_RING,
    R_SCOPE,
    R_SCRIPT,
    R_STALE,
    R_TALK,
    R_TARGET,
    R_VARIABLE,
    check,
)
from tests.dialplan_parse import (
    Dialplan,
    DialplanSyntaxError,
    condition_and_branches,
    jump_targets,
    parse,
    parse_request,
    resolve_target,
    strip_comment,
)

ROOT = Path(__file__).resolve().parent.parent
DIALPLAN = ROOT / "dialplan" / "extensions.conf"
BEFORE = ROOT / "tests" / "fixtures" / "dialplan" / "extensions-before-issue-9.conf"


@pytest.fixture(scope="module")
def text() -> str:
    return DIALPLAN.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def plan(text: str) -> Dialplan:
    return parse(text)


def test_parser_reads_contexts_priorities_and_labels(plan: Dialplan) -> None:
    assert {OUTBOUND, HANGUP, DISA, INBOUND, "callgate-agi", "callgate-answered"} <= set(plan.contexts)
    outbound = plan.contexts[OUTBOUND]["_X."]
    assert [x.priority for x in outbound] == list(range(1, len(outbound) + 1))
    labels = {x.label for x in outbound}
    assert {"prepare", "allowed", "failover", "dial"} <= labels
    assert plan.contexts[HANGUP]["s"][-1].app == "Return"


def test_parser_handles_nesting_and_comments() -> None:
    sample = (
        "[ctx] ; comment\n"
        "exten => _X.,1,Set(A=${IF($[1 = 1]?a:b)}) ; trailing\n"
        " same => n(lbl),GotoIf($[${X} > 1]?lbl:other,1)\n"
        "exten => other,1,Hangup()\n"
    )
    plan = parse(sample)
    first, second = plan.contexts["ctx"]["_X."]
    assert (first.app, first.data) == ("Set", "A=${IF($[1 = 1]?a:b)}")
    assert (second.priority, second.label) == (2, "lbl")
    assert condition_and_branches(second.data) == ("$[${X} > 1]", "lbl", "other,1")
    assert resolve_target(plan, second, "other,1") == ([("ctx", "other", 0)], None)
    assert resolve_target(plan, second, "nowhere")[1] is not None


def test_parser_rejects_bad_priorities() -> None:
    with pytest.raises(DialplanSyntaxError):
        parse("[c]\nexten => s,1,NoOp()\nexten => s,3,NoOp()\n")
    with pytest.raises(DialplanSyntaxError):
        parse("[c]\nsame => n,NoOp()\n")


def test_requests_are_read_from_the_node_failover_gosub() -> None:
    call = parse_request("Gosub", "callgate-agi,s,1(callFinish?login=${URIENCODE(${L})}&prior=${P}&length=0)")
    assert call is not None and call.script == "callFinish"
    assert call.args == {"login": "${URIENCODE(${L})}", "prior": "${P}", "length": "0"}
    assert parse_request("Gosub", "other,s,1(callFinish?a=1)") is None


def test_dialplan_is_clean(text: str) -> None:
    assert check(text) == []


def test_every_script_is_requested(plan: Dialplan) -> None:
    called = {c.script for x in plan.lines() if (c := parse_request(x.app, x.data))}
    assert called == set(contract.SCRIPTS)


def test_the_handler_is_pushed_before_the_first_callprepare(plan: Dialplan) -> None:
    outbound = plan.contexts[OUTBOUND]["_X."]
    prepare = next(x for x in outbound if (c := parse_request(x.app, x.data)) and c.script == "callPrepare")
    pushes = [x for x in outbound if "hangup_handler_push" in x.data]
    assert len(pushes) == 1 and pushes[0].index < prepare.index
    assert jump_targets(pushes[0].app, pushes[0].data) == [f"{HANGUP},s,1"]


# Each defect of issue 9 that the dialplan had, as the rule that reports it on the file as it
# was, and the line (of that file) with the defect.
BEFORE_ISSUE_9: list[tuple[str, str, int]] = [
    ("1: callPrepare ran before the hangup handler was pushed", R_HANDLER, 34),
    ("2: length=${CDR(billsec)} is 0 in the handler", R_TALK, 81),
    ("3: ANSWEREDTIME_MS is the caller's up time, Dial had no U()", R_TALK, 56),
    ("5: AGI() to one node, no failover to the next", R_SCRIPT, 34),
    ("5: no node list", R_NODES, 0),
    ("6: Dial(PJSIP/...) hard-coded", R_DIAL_STRING, 56),
    ("6: ${CHANNEL(endpoint)} evaluated inside ExecIf on every call", R_DIAL_STRING, 28),
    ("7: authorizeCall sent whatever Read() returned", R_DISA, 99),
    ("9: Dial without a ring time-out", R_RING, 56),
    ("20: only an empty callFinish answer was logged as NOT billed", R_BILLED, 81),
    ("20: the failover callFinish answer was not checked", R_BILLED, 68),
]


@pytest.mark.parametrize(
    ("rule", "lineno"), [(r, n) for _, r, n in BEFORE_ISSUE_9], ids=[d for d, _, _ in BEFORE_ISSUE_9]
)
def test_the_dialplan_before_issue_9_fails_each_rule(rule: str, lineno: int) -> None:
    problems = check(BEFORE.read_text(encoding="utf-8"))
    assert (rule, lineno) in {(p.rule, p.lineno) for p in problems}, [p for p in problems if p.rule == rule]


def _replace(old: str, new: str) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        assert old in text, f"mutation anchor not found: {old!r}"
        return text.replace(old, new)

    return mutate


def _drop_line(containing: str) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        lines = text.splitlines(keepends=True)
        kept = [x for x in lines if containing not in strip_comment(x)]
        assert len(kept) == len(lines) - 1, f"mutation must drop exactly one line: {containing!r}"
        return "".join(kept)

    return mutate


def _both(first: Callable[[str], str], second: Callable[[str], str]) -> Callable[[str], str]:
    return lambda text: second(first(text))


PUSH = " same => n,Set(CHANNEL(hangup_handler_push)=callgate-hangup,s,1)\n"
OPEN = " same => n,Set(CG_OPEN_PRIOR=${CG_PRIOR})\n"
PREPARE = "Gosub(callgate-agi,s,1(callPrepare?"

MUTATIONS: list[tuple[str, Callable[[str], str], str]] = [
    # (1) scripts and arguments
    ("unknown script", _replace("(callPrepare?", "(callPrepair?"), R_SCRIPT),
    ("direct AGI to one node",
     _replace(f"same => n,{PREPARE}", "same => n,AGI(${CALLGATE_AGI}/callPrepare?"), R_SCRIPT),
    ("hard-coded AGI host",
     _replace("Gosub(callgate-agi,s,1(authorizeCall", "AGI(agi://10.0.0.1/authorizeCall"), R_SCRIPT),
    ("callFinish without answered_ms", _replace("&answered_ms=${CG_TALK_MS}", ""), R_ARGS),
    ("callPrepare without login", _replace("callPrepare?login=${URIENCODE(${CG_LOGIN})}&", "callPrepare?"), R_ARGS),
    ("authorizeCall without auth", _replace("&auth=${URIENCODE(${CG_AUTH})}", ""), R_ARGS),
    ("resolveDIDRule with empty rule", _replace("&rule=${CG_RULE}", "&rule="), R_ARGS),
    # (2) variables
    ("variable not in contract", _replace("${CALLGATE_MAXTIME}", "${CALLGATE_MAXTIMEOUT}"), R_VARIABLE),
    ("cleared variable not in contract", _replace("CALLGATE_ROUTE_PREFIX=,", "CALLGATE_PREFIX=,"), R_VARIABLE),
    ("variable another script sets", _replace("cost ${CALLGATE_COST}", "cost ${CALLGATE_MAXTIME}"), R_SCOPE),
    ("variable read before any request",
     _replace("Set(CG_PRIOR=1)", "Set(CG_PRIOR=1)\n same => n,NoOp(${CALLGATE_ROUTE})"), R_SCOPE),
    # (3) targets
    ("missing label", _replace("Goto(prepare)", "Goto(prepar)"), R_TARGET),
    ("missing GotoIf label", _replace('"Allowed"]?allowed)', '"Allowed"]?alowed)'), R_TARGET),
    ("missing context", _replace("Goto(callgate-outbound,", "Goto(callgate-outbund,"), R_TARGET),
    ("missing handler context", _replace("=callgate-hangup,s,1)", "=callgate-hangupx,s,1)"), R_TARGET),
    # (4) [item 1] the handler closes every prepared prior, on every path
    ("no hangup handler", _drop_line("hangup_handler_push"), R_HANDLER),
    ("handler pushed after callPrepare, before Dial (as before issue 9)",
     _both(_replace(PUSH, ""), _replace(" same => n(dial),Dial(", PUSH + " same => n(dial),Dial(")), R_HANDLER),
    ("prior marked open only after Allowed",
     _both(_replace(OPEN, ""), _replace(" same => n(limit),", OPEN + " same => n(limit),")), R_HANDLER),
    ("handler closes a prior it was not told", _replace("&prior=${CG_CLOSE_PRIOR}&", "&prior=1&"), R_HANDLER),
    # (5) fail closed
    ("branch on AGISTATUS instead of the result",
     _replace('"${CALLGATE_RESULT}" = "Allowed"]?allowed', '"${AGISTATUS}" = "SUCCESS"]?allowed'), R_FAIL_CLOSED),
    ("fail open: dial unless declined",
     _replace('"${CALLGATE_RESULT}" = "Allowed"]?allowed', '"${CALLGATE_RESULT}" != "Declined"]?allowed'),
     R_FAIL_CLOSED),
    ("inbound dials without OK", _replace('"${CALLGATE_RESULT}" = "OK"]?rule', '"1" = "1"]?rule'), R_FAIL_CLOSED),
    ("stale result before callPrepare",
     _replace("MSet(CALLGATE_RESULT=,CALLGATE_ERROR=,CALLGATE_ANSWER=,CALLGATE_MAXTIME=", "MSet(CALLGATE_MAXTIME="),
     R_STALE),
    # (6) failover
    ("failover without callFinish", _drop_line("&length=0&answered_ms=0&"), R_FAILOVER),
    ("failover without a new prior", _drop_line("Set(CG_PRIOR=$[${CG_PRIOR} + 1])"), R_FAILOVER),
    ("failover leaves the prior open: closed twice", _replace("n(failover),Set(CG_OPEN_PRIOR=)", "n(failover),NoOp()"),
     R_FAILOVER),
    ("handler pushed per prior", _replace(OPEN, OPEN + PUSH), R_FAILOVER),
    ("no failover loop", _replace(" same => n,Goto(prepare)", " same => n,Hangup()"), R_FAILOVER),
    ("failover closes with a made-up status",
     _replace("&answered_ms=0&status=${DIALSTATUS}", "&answered_ms=0&status=ANSWER"), R_FAILOVER),
    # (7) [items 2, 3] the talk time is the called party's
    ("handler bills on CDR(billsec) (0 on Asterisk 22)", _replace("&length=${CG_LENGTH}", "&length=${CDR(billsec)}"),
     R_TALK),
    ("handler bills on ANSWEREDTIME_MS (the caller's up time)",
     _replace("&answered_ms=${CG_TALK_MS}", "&answered_ms=${ANSWEREDTIME_MS}"), R_TALK),
    ("Dial without the answer subroutine", _replace("U(callgate-answered^${CHANNEL(name)})", ""), R_TALK),
    ("answer instant on the master channel",
     _replace("SHARED(CG_ANSWERED_AT,${ARG1})", "MASTER_CHANNEL(CG_ANSWERED_AT)"), R_TALK),
    ("answer instant in whole seconds", _replace("CG_ANSWERED_AT,${ARG1})=${STRFTIME(,UTC,%s%3q)}",
                                                 "CG_ANSWERED_AT,${ARG1})=${EPOCH}"), R_TALK),
    ("an earlier prior's answer instant kept", _drop_line("Set(SHARED(CG_ANSWERED_AT)=)"), R_TALK),
    # (8) [item 9] ring time-out
    ("Dial rings for ever", _replace("Dial(${CG_DIAL},${CG_RINGTIME},", "Dial(${CG_DIAL},,"), R_RING),
    ("ring time-out without a fallback", _replace("?${CALLGATE_RINGTIME}:60)}", "?${CALLGATE_RINGTIME})}"), R_RING),
    # (9) [item 7] DISA input
    ("DISA sends an empty auth", _drop_line('"${READSTATUS}" != "OK"'), R_DISA),
    ("DISA checks READSTATUS only",
     _replace('"${READSTATUS}" != "OK" | "${CG_AUTH}" = ""', '"${READSTATUS}" != "OK"'), R_DISA),
    # (10) [item 20] every answer but Saved/Spooled is NOT billed
    ("handler logs only an empty answer",
     _replace('same => n,GotoIf($["${CALLGATE_RESULT}" = "Saved" | "${CALLGATE_RESULT}" = "Spooled"]?billed)',
              'same => n,GotoIf($["${CALLGATE_RESULT}" != ""]?billed)'), R_BILLED),
    ("failover answer not checked", _drop_line("its hold is NOT released"), R_BILLED),
    # (11) [item 6] dial string and login
    ("trunk technology hard-coded",
     _replace("Dial(${CG_DIAL},", "Dial(PJSIP/${CALLGATE_ROUTE_PREFIX}${CALLGATE_DESTINATION}@${CALLGATE_ROUTE},"),
     R_DIAL_STRING),
    ("no dial hook", _drop_line("Gosub(${CALLGATE_HOOKS},dial,1)"), R_DIAL_STRING),
    ("CHANNEL(endpoint) on every channel type",
     _replace('n(pjsip),GotoIf($["${CHANNEL(channeltype)}" != "PJSIP"]?login)', "n(pjsip),NoOp()"), R_DIAL_STRING),
    ("CHANNEL(endpoint) inside ExecIf (evaluated on every call)",
     _replace("same => n,Set(CG_LOGIN=${CHANNEL(endpoint)})",
              'same => n,ExecIf($["${CG_LOGIN}" = ""]?Set(CG_LOGIN=${CHANNEL(endpoint)}))'), R_DIAL_STRING),
    # (12) [item 5] several callgate nodes
    ("one node only", _drop_line("LOCAL(CG_NODE_URL)=${CALLGATE_AGI${CG_TRY}}"), R_NODES),
    ("node loop does not stop at an answer", _drop_line('"${CALLGATE_RESULT}" != ""]?done'), R_NODES),
    ("node failure logs the query (a DISA PIN)", _replace("to ${CUT(ARG1,?,1)}", "to ${ARG1}"), R_NODES),
    # (13) createCallback's legs go through callgate-outbound
    ("callback leg 1 dials by itself",
     _replace(" same => n,Goto(callgate-outbound,${EXTEN},1)\n same => n(refuse),Congestion(5)",
              " same => n,Dial(PJSIP/${EXTEN})\n same => n(refuse),Congestion(5)"), R_CALLBACK),
    ("callback leg 2 dials leg 1's number",
     _replace("Goto(callgate-outbound,${CG_CALLBACK_DEST2},1)", "Goto(callgate-outbound,${EXTEN},1)"), R_CALLBACK),
    ("callback leg 2 not joined to its call",
     _replace(" same => n,Set(CG_CALLBACK=${CG_CALLBACK})\n same => n,Set(CG_CALLBACK_LEG=2)",
              " same => n,Set(CG_CALLBACK_LEG=2)"), R_CALLBACK),
    ("callback without a login", _replace('GotoIf($["${CG_LOGIN}" = ""]?refuse)', "NoOp()"), R_CALLBACK),
    ("callback context gone", _replace("[callgate-callback]", "[callgate-callback-old]"), R_CALLBACK),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "rule"), [(m, r) for _, m, r in MUTATIONS], ids=[n for n, _, _ in MUTATIONS])
def test_checker_reports_mutation(text: str, mutate: Callable[[str], str], rule: str) -> None:
    mutated = mutate(text)
    assert mutated != text
    problems = check(mutated)
    assert rule in {p.rule for p in problems}, problems


def test_every_rule_is_exercised_by_a_mutation() -> None:
    assert ALL_RULES == {rule for _, _, rule in MUTATIONS}
