"""Checks of dialplan/extensions.conf against fastagi.contract and what Asterisk 22 does.

A path-sensitive walk over the dialplan's control flow (Goto, GotoIf, ExecIf, fallthrough,
Gosub) checks what must hold on every path; static checks look at single lines. Each rule
is named after the defect it catches (issue 9 items in brackets); tests/test_dialplan.py
shows every rule firing on a mutated copy and on the dialplan as it was before issue 9.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from fastagi import contract
from tests.dialplan_parse import (
    AGI_CONTEXT,
    FALLTHROUGH_MARK,
    IF_FUNC_RE,
    NAME_RE,
    RESULT_TEST_RE,
    AgiCall,
    Dialplan,
    Line,
    Node,
    Problem,
    assignments,
    condition_and_branches,
    is_hook,
    jump_targets,
    parse,
    parse_request,
    reads,
    resolve_target,
    split_app,
    split_top,
)

OUTBOUND = "callgate-outbound"
HANGUP = "callgate-hangup"
DISA = "callgate-disa"
INBOUND = "callgate-inbound"
ANSWERED = "callgate-answered"
CALLBACK = "callgate-callback"
# createCallback's legs: where each enters callgate-outbound (the number it dials)
CALLBACK_LEGS = {"_X.": "${EXTEN}", "leg2": "${CG_CALLBACK_DEST2}"}

# Globals the operator sets; they are not callgate's channel variables.
OPERATOR_GLOBALS: frozenset[str] = frozenset({"CALLGATE_AGI", "CALLGATE_NODE", "CALLGATE_HOOKS"})

REQUIRED_ARGS: dict[str, tuple[str, ...]] = {
    contract.SCRIPT_CALL_PREPARE: ("login", "destination", "prior"),
    contract.SCRIPT_CALL_FINISH: ("login", "destination", "prior", "length", "status", "answered_ms"),
    contract.SCRIPT_AUTHORIZE_CALL: ("callerid", "auth"),
    contract.SCRIPT_RESOLVE_DID_RULE: ("did", "rule", "callerid", "status"),
    contract.SCRIPT_GET_TEXT_BALANCE: ("login",),
}
# The CALLGATE_RESULT value that means "go ahead" after each script.
SUCCESS: dict[str, str] = {
    contract.SCRIPT_CALL_PREPARE: contract.RESULT_ALLOWED,
    contract.SCRIPT_AUTHORIZE_CALL: contract.RESULT_ALLOWED,
    contract.SCRIPT_RESOLVE_DID_RULE: contract.RESULT_OK,
    contract.SCRIPT_CALL_FINISH: contract.RESULT_SAVED,
    contract.SCRIPT_GET_TEXT_BALANCE: contract.RESULT_OK,
}
TERMINAL_APPS: frozenset[str] = frozenset({"hangup", "congestion", "busy", "return"})
BRANCHING_APPS: frozenset[str] = frozenset({"gotoif", "execif", "while", "exitwhile"})
NOW_MS = "${STRFTIME(,UTC,%s%3q)}"  # the clock read at the answer and at the hangup

R_SCRIPT = "1-script"  # a request names an unknown script, or an AGI() bypasses callgate-agi
R_ARGS = "1-args"  # a script's required argument is missing or empty
R_VARIABLE = "2-variable"  # a CALLGATE_* name not in the contract
R_SCOPE = "2-scope"  # read where the last request's script does not set it
R_TARGET = "3-target"  # Goto/GotoIf/Gosub/handler target missing
R_HANDLER = "4-handler"  # [1] callPrepare or Dial without the handler pushed and the prior open
R_FAIL_CLOSED = "5-fail-closed"  # Dial without a CALLGATE_RESULT test, or AGISTATUS branch
R_STALE = "5-stale-result"  # a request without clearing CALLGATE_RESULT first
R_FAILOVER = "6-failover"  # failover does not close / bump the prior / closes twice
R_TALK = "7-talk-time"  # [2, 3] billed on CDR(billsec) / ANSWEREDTIME_MS, not the callee's answer
R_RING = "8-ring-timeout"  # [9] Dial without the ring time-out
R_DISA = "9-disa-input"  # [7] authorizeCall sent without checking READSTATUS / empty input
R_BILLED = "10-billed"  # [20] a callFinish answer other than Saved/Spooled not logged as NOT billed
R_DIAL_STRING = "11-dial-string"  # [6] hard-coded trunk technology, CHANNEL(endpoint) off PJSIP
R_NODES = "12-nodes"  # [5] no failover to the next callgate node, or the query logged
R_CALLBACK = "13-callback"  # a createCallback leg that bypasses callgate-outbound, or is not joined to its hold

ALL_RULES: frozenset[str] = frozenset(
    {R_SCRIPT, R_ARGS, R_VARIABLE, R_SCOPE, R_TARGET, R_HANDLER, R_FAIL_CLOSED, R_STALE, R_FAILOVER,
     R_TALK, R_RING, R_DISA, R_BILLED, R_DIAL_STRING, R_NODES, R_CALLBACK}
)  # fmt: skip


def script_variables(script: str) -> tuple[str, ...]:
    return contract.SCRIPT_VARIABLES.get(script, ())


def known_variables() -> frozenset[str]:
    return contract.all_variables()


@dataclass(frozen=True, slots=True)
class State:
    last_script: str | None = None  # the script of the last request on this path
    result_fresh: bool = False  # CALLGATE_RESULT cleared since the last request
    checked: bool = False  # passed a CALLGATE_RESULT == success test since the last request
    pushed: bool = False  # the outbound hangup handler is on the stack
    open: bool = False  # CG_OPEN_PRIOR names the current prior (the handler would close it)
    dialed_open: bool = False  # a Dial happened and no callFinish closed it yet
    prior_fresh: bool = False  # the prior variable was set/incremented since the last callPrepare
    redialing: bool = False  # a Dial happened earlier on this path
    answer_cleared: bool = False  # SHARED(CG_ANSWERED_AT) cleared since the last Dial
    pjsip: bool = False  # CHANNEL(channeltype) was tested to be PJSIP
    input_checked: bool = False  # READSTATUS OK and a non-empty CG_AUTH since the last Read


@dataclass(slots=True)
class Walk:
    plan: Dialplan
    prior_var: str | None
    problems: set[Problem] = field(default_factory=set)
    prepare_visits: list[tuple[Line, State]] = field(default_factory=list)

    def report(self, rule: str, line: Line, message: str) -> None:
        self.problems.add(Problem(rule, line.lineno, message))

    def check_reads(self, line: Line, text: str, state: State) -> None:
        if line.context == AGI_CONTEXT:
            return  # the request wrapper reads CALLGATE_RESULT for whichever script it ran
        for name in reads(text):
            if name in OPERATOR_GLOBALS or name not in known_variables():
                continue  # unknown names are reported by the static check
            if state.last_script is None:
                self.report(R_SCOPE, line, f"{name} is read before any callgate request on some path")
            elif name not in contract.COMMON_VARIABLES and name not in script_variables(state.last_script):
                self.report(R_SCOPE, line, f"{name} is read after {state.last_script}, which does not set it")
        if "CHANNEL(endpoint)" in text and (line.app.lower() == "execif" or not state.pjsip):
            self.report(R_DIAL_STRING, line, "CHANNEL(endpoint) evaluated where the channel may not be PJSIP")

    def request(self, line: Line, call: AgiCall, state: State) -> State:
        if not state.result_fresh:
            self.report(R_STALE, line, "CALLGATE_RESULT is not cleared before this request on some path")
        script = call.script
        if script == contract.SCRIPT_CALL_PREPARE:
            self.prepare_visits.append((line, state))
            if state.dialed_open:
                self.report(R_FAILOVER, line, "callPrepare runs again before callFinish closed the dial")
            if not state.prior_fresh:
                self.report(R_FAILOVER, line, "callPrepare runs again without a new prior")
            if line.context == OUTBOUND and not (state.pushed and state.open):
                self.report(R_HANDLER, line, "callPrepare before the hangup handler is pushed and CG_OPEN_PRIOR "
                            "set: a caller hanging up during it leaves its hold open")  # fmt: skip
        if script == contract.SCRIPT_CALL_FINISH and line.context == OUTBOUND and state.open:
            self.report(R_FAILOVER, line, "failover closes a prior the hangup handler would close again")
        if script == contract.SCRIPT_AUTHORIZE_CALL and not state.input_checked:
            self.report(R_DISA, line, "authorizeCall sent without READSTATUS OK and a non-empty auth")
        return replace(
            state, last_script=script, result_fresh=False, checked=False,
            prior_fresh=False if script == contract.SCRIPT_CALL_PREPARE else state.prior_fresh,
            dialed_open=False if script == contract.SCRIPT_CALL_FINISH else state.dialed_open,
        )  # fmt: skip

    def assign(self, line: Line, name: str, value: str, state: State) -> State:
        key = name.replace(" ", "").lower()
        if name == contract.VAR_RESULT and value == "":
            return replace(state, result_fresh=True)
        if key == "channel(hangup_handler_push)":
            if state.pushed:
                self.report(R_FAILOVER, line, "hangup handler pushed twice: a prior would close twice")
            return replace(state, pushed=True)
        if key == "channel(hangup_handler_pop)":
            return replace(state, pushed=False)
        if name == "CG_OPEN_PRIOR":
            return replace(state, open=self.prior_var is not None and value.strip() == f"${{{self.prior_var}}}")
        if key == "shared(cg_answered_at)" and value == "":
            return replace(state, answer_cleared=True)
        if self.prior_var is not None and name == self.prior_var:
            bump = rf"\$\[\s*\$\{{{re.escape(self.prior_var)}\}}\s*\+\s*1\s*\]"
            if value.strip() == "1" or re.fullmatch(bump, value.strip()):
                return replace(state, prior_fresh=True)
        return state

    def dial(self, line: Line, state: State) -> list[tuple[str, State]]:
        if line.context == OUTBOUND:
            if not (state.pushed and state.open):
                self.report(R_HANDLER, line, "Dial without the callgate hangup handler pushed and CG_OPEN_PRIOR set")
            if not state.answer_cleared:
                self.report(R_TALK, line, "Dial without clearing SHARED(CG_ANSWERED_AT): an earlier answer could bill")
        if not state.checked:
            self.report(R_FAIL_CLOSED, line, "Dial reachable without a CALLGATE_RESULT success test (fails open)")
        if state.last_script != contract.SCRIPT_CALL_PREPARE:
            return [(FALLTHROUGH_MARK, state)]  # not a call callgate prepared: nothing to close
        return [(FALLTHROUGH_MARK, replace(state, dialed_open=True, redialing=True, answer_cleared=False))]

    def apply(self, line: Line, app: str, data: str, state: State) -> list[tuple[str, State]]:
        """Run one application: the (target, state) pairs it continues with."""
        low = app.lower()
        call = parse_request(app, data)
        if call is not None:
            return [(FALLTHROUGH_MARK, self.request(line, call, state))]
        if low in ("set", "mset"):
            new = state
            for name, value in assignments(app, data):
                new = self.assign(line, name, value, new)
            return [(FALLTHROUGH_MARK, new)]
        if low == "read":
            return [(FALLTHROUGH_MARK, replace(state, input_checked=False))]
        if low == "dial":
            return self.dial(line, state)
        if low == "goto":
            return [(data, state)]
        if low == "gosub":
            return [(FALLTHROUGH_MARK, state)] if is_hook(data) else [(data, state), (FALLTHROUGH_MARK, state)]
        if low == "gotoif":
            cond, t, f = condition_and_branches(data)
            on_true, on_false = self.implied(cond, state)
            return [(t or FALLTHROUGH_MARK, on_true), (f or FALLTHROUGH_MARK, on_false)]
        if low == "execif":
            cond, t, f = condition_and_branches(data)
            out: list[tuple[str, State]] = []
            for branch in (t, f):
                out.extend(self.apply(line, *split_app(branch), state) if branch else [(FALLTHROUGH_MARK, state)])
            return out
        if low in TERMINAL_APPS:
            return []
        return [(FALLTHROUGH_MARK, state)]

    @staticmethod
    def implied(cond: str, state: State) -> tuple[State, State]:
        """The states on the true and on the false branch of a GotoIf on `cond`."""
        on_true, on_false = state, state
        success = SUCCESS.get(state.last_script or "")
        if state.last_script is not None and "|" not in cond:
            for op, value in RESULT_TEST_RE.findall(cond):
                if value == success:
                    on_true = replace(on_true, checked=on_true.checked or op == "=")
                    on_false = replace(on_false, checked=on_false.checked or op == "!=")
                    break
        if '"${CHANNEL(channeltype)}" != "PJSIP"' in cond:
            on_false = replace(on_false, pjsip=True)
        elif '"${CHANNEL(channeltype)}" = "PJSIP"' in cond:
            on_true = replace(on_true, pjsip=True)
        if '"${READSTATUS}" != "OK"' in cond and '"${CG_AUTH}" = ""' in cond and "|" in cond:
            on_false = replace(on_false, input_checked=True)
        elif '"${READSTATUS}" = "OK"' in cond and '"${CG_AUTH}" != ""' in cond and "&" in cond:
            on_true = replace(on_true, input_checked=True)
        return on_true, on_false

    def run(self, entries: list[Node]) -> None:
        seen: set[tuple[Node, State]] = set()
        stack: list[tuple[Node, State]] = [(node, State()) for node in entries]
        while stack:
            node, state = stack.pop()
            if (node, state) in seen:
                continue
            seen.add((node, state))
            context, exten, index = node
            lines = self.plan.contexts[context][exten]
            line = lines[index]
            self.check_reads(line, line.data, state)
            for target, new in self.apply(line, line.app, line.data, state):
                if target == FALLTHROUGH_MARK:
                    if index + 1 < len(lines):
                        stack.append(((context, exten, index + 1), new))
                    continue
                nodes, _ = resolve_target(self.plan, line, target)
                stack.extend((n, new) for n in nodes)


def _lines(plan: Dialplan, context: str) -> list[Line]:
    return [x for x in plan.lines() if x.context == context]


def _requests(plan: Dialplan, context: str, script: str) -> list[tuple[Line, AgiCall]]:
    found = [(x, parse_request(x.app, x.data)) for x in _lines(plan, context)]
    return [(x, call) for x, call in found if call is not None and call.script == script]


def _next_lines(plan: Dialplan, line: Line, count: int) -> list[Line]:
    lines = plan.contexts[line.context][line.exten]
    return lines[line.index + 1 : line.index + 1 + count]


def check_line(plan: Dialplan, line: Line, problems: set[Problem]) -> None:
    """Rules on one line: names, requests and their arguments, targets, AGISTATUS branches."""
    for name in NAME_RE.findall(line.data):
        if name not in known_variables() | OPERATOR_GLOBALS:
            problems.add(Problem(R_VARIABLE, line.lineno, f"{name} is not in fastagi.contract"))
    if line.app.lower() == "agi" and not (line.context == AGI_CONTEXT and line.data == "${CG_NODE_URL}/${ARG1}"):
        problems.add(Problem(R_SCRIPT, line.lineno, "AGI() outside Gosub(callgate-agi,...): no node failover"))
    if (line.app.lower() == "gosub" and line.data.startswith(AGI_CONTEXT)) or (
        line.app.lower() == "agi" and line.context != AGI_CONTEXT
    ):
        call = parse_request(line.app, line.data)
        if call is None or call.script not in contract.SCRIPTS:
            problems.add(Problem(R_SCRIPT, line.lineno, f"not a request of a known script: {line.data[:60]!r}"))
        else:
            for arg in REQUIRED_ARGS[call.script]:
                if not call.args.get(arg):
                    problems.add(Problem(R_ARGS, line.lineno, f"{call.script} without {arg}"))
    if line.context in (OUTBOUND, HANGUP) and re.search(r"CDR\(billsec\)|ANSWEREDTIME", line.data):
        problems.add(Problem(R_TALK, line.lineno, "CDR(billsec) is 0 in the handler, ANSWEREDTIME_MS the "
                             "caller's up time: neither is the talk time"))  # fmt: skip
    for target in jump_targets(line.app, line.data):
        _, error = resolve_target(plan, line, target)
        if error:
            problems.add(Problem(R_TARGET, line.lineno, error))
    conditions: list[str] = IF_FUNC_RE.findall(line.data)
    if line.app.lower() in BRANCHING_APPS:
        conditions.append(condition_and_branches(line.data)[0])
    for cond in conditions:
        if "AGISTATUS" in cond and "CALLGATE_RESULT" not in cond:
            problems.add(Problem(R_FAIL_CLOSED, line.lineno, "branches on AGISTATUS without CALLGATE_RESULT"))


def check_contexts(plan: Dialplan, prior_var: str | None) -> set[Problem]:
    """Rules on the shape of whole contexts (what a request or a Dial must come with)."""
    problems: set[Problem] = set()

    def need(ok: bool, rule: str, lineno: int, message: str) -> None:
        if not ok:
            problems.add(Problem(rule, lineno, message))

    outbound = _lines(plan, OUTBOUND)
    for x in outbound:
        if x.app.lower() != "dial":
            continue
        args = split_top(x.data, ",")
        need(args[0].strip() == "${CG_DIAL}", R_DIAL_STRING, x.lineno, "Dial's target is not ${CG_DIAL}")
        need(len(args) > 1 and args[1].strip() == "${CG_RINGTIME}", R_RING, x.lineno, "Dial without ${CG_RINGTIME}")
        need(f"U({ANSWERED}^${{CHANNEL(name)}})" in x.data, R_TALK, x.lineno, f"Dial without U({ANSWERED}^...)")
    need(any(x.data.startswith("CG_RINGTIME=") and "CALLGATE_RINGTIME" in x.data and re.search(r":\d+\)\}$", x.data)
             for x in outbound), R_RING, 0, "CG_RINGTIME is not CALLGATE_RINGTIME with a fallback")  # fmt: skip
    need(any(x.app.lower() == "gosub" and x.data.startswith("${CALLGATE_HOOKS},dial,") for x in outbound),
         R_DIAL_STRING, 0, "no 'dial' hook: the operator cannot set the dial string")  # fmt: skip
    answered = [f"{x.app}({x.data})" for x in _lines(plan, ANSWERED)]
    need(f"Set(SHARED(CG_ANSWERED_AT,${{ARG1}})={NOW_MS})" in answered, R_TALK, 0,
         f"[{ANSWERED}] does not store the answer instant on the caller")  # fmt: skip
    handler = _lines(plan, HANGUP)
    need(any(x.data == "CG_ANSWERED_AT=${SHARED(CG_ANSWERED_AT)}" for x in handler), R_TALK, 0,
         "the handler does not read the answer instant")  # fmt: skip
    need(any(x.data == f"CG_TALK_MS=$[{NOW_MS} - ${{CG_ANSWERED_AT}}]" for x in handler), R_TALK, 0,
         "the handler does not compute the talk time")  # fmt: skip
    need(bool(handler) and handler[0].app.lower() == "gotoif" and '"${CG_OPEN_PRIOR}" = ""' in handler[0].data,
         R_HANDLER, handler[0].lineno if handler else 0, "the handler does not start by testing CG_OPEN_PRIOR")
    for x, call in _requests(plan, HANGUP, contract.SCRIPT_CALL_FINISH):
        for arg, want in (("length", "${CG_LENGTH}"), ("answered_ms", "${CG_TALK_MS}"), ("prior", "${CG_CLOSE_PRIOR}")):
            need(call.args.get(arg) == want, R_TALK if arg != "prior" else R_HANDLER, x.lineno,
                 f"hangup handler must pass {arg}={want}")  # fmt: skip
    for context in (OUTBOUND, HANGUP):
        for x, _ in _requests(plan, context, contract.SCRIPT_CALL_FINISH):
            after = _next_lines(plan, x, 2)
            tested = bool(after) and after[0].app.lower() == "gotoif" and all(
                f'"${{CALLGATE_RESULT}}" = "{r}"' in after[0].data for r in ("Saved", "Spooled"))
            logged = len(after) > 1 and after[1].app.lower() == "log" and after[1].data.startswith("ERROR,")
            need(tested and logged, R_BILLED, x.lineno, "callFinish not followed by Saved|Spooled, else Log(ERROR)")
    agi = _lines(plan, AGI_CONTEXT)
    data = {x.data for x in agi}
    need("LOCAL(CG_NODE_URL)=${CALLGATE_AGI}" in data and "LOCAL(CG_NODE_URL)=${CALLGATE_AGI${CG_TRY}}" in data,
         R_NODES, 0, f"[{AGI_CONTEXT}] does not try CALLGATE_AGI, then CALLGATE_AGI2..")  # fmt: skip
    need(any(x.app.lower() == "gotoif" and x.data.startswith('$["${CALLGATE_RESULT}" != ""]') for x in agi),
         R_NODES, 0, f"[{AGI_CONTEXT}] does not stop at the first answer")  # fmt: skip
    for x in agi:
        need(not (x.app.lower() in ("log", "verbose", "noop") and "${ARG1}" in x.data), R_NODES, x.lineno,
             "the request's query is logged (a DISA PIN)")  # fmt: skip
    # (6) failover: a branch on CONGESTION/CHANUNAVAIL whose callFinish closes the prior at 0
    need(any(x.app.lower() == "gotoif" and all(w in x.data for w in ("DIALSTATUS", "CONGESTION", "CHANUNAVAIL"))
             for x in outbound), R_FAILOVER, 0, "no failover branch on DIALSTATUS CONGESTION/CHANUNAVAIL")  # fmt: skip
    for x, call in _requests(plan, OUTBOUND, contract.SCRIPT_CALL_FINISH):
        expected = {"length": "0", "status": "${DIALSTATUS}"}
        if prior_var is not None:
            expected["prior"] = f"${{{prior_var}}}"
        for arg, value in expected.items():
            need(call.args.get(arg) == value, R_FAILOVER, x.lineno, f"failover callFinish must pass {arg}={value}")
    return problems


def check_callback(plan: Dialplan) -> set[Problem]:
    """[callgate-callback]: each leg of a callback is an ordinary outbound call. It tests
    CG_LOGIN, sets CG_CALLBACK again on its own channel (the VarSet the channel registry
    joins the legs by), and goes to callgate-outbound with its own number; it never dials,
    nor asks callgate, itself (callPrepare's hold and the hangup handler's callFinish would
    be skipped)."""
    problems: set[Problem] = set()
    extens = plan.contexts.get(CALLBACK, {})
    for exten, number in CALLBACK_LEGS.items():
        lines = extens.get(exten, [])
        if not lines:
            problems.add(Problem(R_CALLBACK, 0, f"[{CALLBACK}] has no extension {exten}"))
            continue
        first = lines[0].lineno
        goto = [i for i, x in enumerate(lines) if x.app.lower() == "goto" and x.data == f"{OUTBOUND},{number},1"]
        if not goto:
            problems.add(Problem(R_CALLBACK, first, f"{exten} does not Goto({OUTBOUND},{number},1)"))
            continue
        before = lines[: goto[0]]
        if not any(x.app.lower() == "gotoif" and '"${CG_LOGIN}" = ""' in x.data for x in before):
            problems.add(Problem(R_CALLBACK, first, f"{exten} does not refuse an empty CG_LOGIN"))
        if not any(x.app.lower() == "set" and x.data == "CG_CALLBACK=${CG_CALLBACK}" for x in before):
            problems.add(Problem(R_CALLBACK, first, f"{exten} does not set CG_CALLBACK on its channel"))
        for x in lines:
            if x.app.lower() in ("dial", "agi") or (x.app.lower() == "gosub" and x.data.startswith(AGI_CONTEXT)):
                problems.add(Problem(R_CALLBACK, x.lineno, f"{exten} dials or asks callgate itself"))
    return problems


def check(text: str) -> list[Problem]:
    plan = parse(text)
    problems: set[Problem] = set()
    prior_vars: set[str] = set()
    for line in plan.lines():
        check_line(plan, line, problems)
        call = parse_request(line.app, line.data)
        if call is not None and call.script == contract.SCRIPT_CALL_PREPARE:
            m = re.fullmatch(r"\$\{([A-Za-z0-9_]+)\}", call.args.get("prior", ""))
            if m:
                prior_vars.add(m.group(1))
    if len(prior_vars) > 1:
        problems.add(Problem(R_FAILOVER, 0, f"callPrepare uses several prior variables: {sorted(prior_vars)}"))
    prior_var = next(iter(prior_vars), None)
    if prior_var is None:
        problems.add(Problem(R_FAILOVER, 0, "no callPrepare passes prior=${VARIABLE}"))
    walk = Walk(plan, prior_var)
    walk.run([(context, exten, 0) for context, extens in plan.contexts.items() for exten in extens])
    problems |= walk.problems
    if not any(line.context == OUTBOUND and state.redialing for line, state in walk.prepare_visits):
        problems.add(Problem(R_FAILOVER, 0, "no path re-runs callPrepare after a failed Dial"))
    problems |= check_contexts(plan, prior_var)
    problems |= check_callback(plan)
    return sorted(problems, key=lambda p: (p.lineno, p.rule, p.message))
