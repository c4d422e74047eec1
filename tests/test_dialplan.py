"""Static checks of dialplan/extensions.conf against fastagi.contract.

A small parser reads the contexts, `exten =>`/`same =>` lines, priorities and labels, and a
path-sensitive walk over the dialplan's control flow (Goto, GotoIf, ExecIf, fallthrough)
checks what must hold on every path: callgate variables are read only after an AGI of a
script that sets them, the outbound hangup handler is pushed before Dial, Dial is reached
only past a successful CALLGATE_RESULT test, and failover closes the failed attempt before
asking for the next prior. Every rule is shown to fire by mutating a copy of the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fastagi import contract

DIALPLAN = Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf"

OUTBOUND = "callgate-outbound"
HANGUP = "callgate-hangup"
DISA = "callgate-disa"
INBOUND = "callgate-inbound"

# Globals the operator sets; they are not callgate's channel variables.
OPERATOR_GLOBALS: frozenset[str] = frozenset({"CALLGATE_AGI", "CALLGATE_NODE"})

REQUIRED_ARGS: dict[str, tuple[str, ...]] = {
    contract.SCRIPT_CALL_PREPARE: ("login", "destination", "prior"),
    contract.SCRIPT_CALL_FINISH: ("login", "destination", "prior", "length", "status", "answered_ms"),
    contract.SCRIPT_AUTHORIZE_CALL: ("callerid", "auth"),
    contract.SCRIPT_RESOLVE_DID_RULE: ("did", "rule", "callerid", "status"),
}

# The CALLGATE_RESULT value that means "go ahead" after each script.
SUCCESS: dict[str, str] = {
    contract.SCRIPT_CALL_PREPARE: contract.RESULT_ALLOWED,
    contract.SCRIPT_AUTHORIZE_CALL: contract.RESULT_ALLOWED,
    contract.SCRIPT_RESOLVE_DID_RULE: contract.RESULT_OK,
    contract.SCRIPT_CALL_FINISH: contract.RESULT_SAVED,
}

TERMINAL_APPS: frozenset[str] = frozenset({"hangup", "congestion", "busy", "return"})
BRANCHING_APPS: frozenset[str] = frozenset({"gotoif", "execif", "while", "exitwhile"})

# Rule codes a Problem carries (the numbers refer to the checks listed in the task).
R_SCRIPT = "1-script"  # AGI names an unknown script or is not ${CALLGATE_AGI}/script?query
R_ARGS = "1-args"  # a script's required argument is missing or empty
R_VARIABLE = "2-variable"  # a CALLGATE_* name not in the contract
R_SCOPE = "2-scope"  # read where the last AGI's script does not set it
R_TARGET = "3-target"  # Goto/GotoIf/Gosub/handler target missing
R_HANDLER = "4-handler"  # Dial without the hangup handler pushed
R_FAIL_CLOSED = "5-fail-closed"  # Dial without a CALLGATE_RESULT test, or AGISTATUS branch
R_STALE = "5-stale-result"  # AGI without clearing CALLGATE_RESULT first
R_FAILOVER = "6-failover"  # failover does not close / bump the prior / pop the handler


# ----------------------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class Line:
    lineno: int
    context: str
    exten: str
    index: int  # position inside the extension, from 0
    priority: int
    label: str | None
    app: str
    data: str


@dataclass(slots=True)
class Dialplan:
    # context -> extension -> lines in priority order
    contexts: dict[str, dict[str, list[Line]]] = field(default_factory=dict)

    def lines(self) -> Iterator[Line]:
        for extens in self.contexts.values():
            for lines in extens.values():
                yield from lines


class DialplanSyntaxError(ValueError):
    pass


_CONTEXT_RE = re.compile(r"^\[([^\]]+)\]")
_LINE_RE = re.compile(r"^(exten|same)\s*=>?\s*(.*)$", re.IGNORECASE)
_PRIORITY_RE = re.compile(r"^(\d+|n)(?:\(([A-Za-z0-9_-]+)\))?$")


def strip_comment(raw: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in raw:
        if ch == ";" and not escaped:
            break
        escaped = ch == "\\" and not escaped
        out.append(ch)
    return "".join(out).strip()


def split_top(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on `sep` outside (), [] and {} nesting."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0 and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_app(text: str) -> tuple[str, str]:
    """`Name(data)` -> ("Name", "data")."""
    text = text.strip()
    paren = text.find("(")
    if paren < 0:
        return text, ""
    if not text.endswith(")"):
        raise DialplanSyntaxError(f"unbalanced application call: {text!r}")
    return text[:paren].strip(), text[paren + 1 : -1]


def parse(text: str) -> Dialplan:
    plan = Dialplan()
    context: str | None = None
    last_exten: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = strip_comment(raw)
        if not line or line.startswith("#"):
            continue
        header = _CONTEXT_RE.match(line)
        if header:
            context = header.group(1).strip()
            plan.contexts.setdefault(context, {})
            last_exten = None
            continue
        m = _LINE_RE.match(line)
        if m is None:
            continue  # include =>, switch =>, settings: not ours to check
        if context is None:
            raise DialplanSyntaxError(f"line {lineno}: extension outside a context")
        kind, rest = m.group(1).lower(), m.group(2)
        if kind == "exten":
            parts = split_top(rest, ",", maxsplit=2)
            if len(parts) != 3:
                raise DialplanSyntaxError(f"line {lineno}: expected exten => name,priority,app")
            exten, prio, app_text = (p.strip() for p in parts)
        else:
            if last_exten is None:
                raise DialplanSyntaxError(f"line {lineno}: 'same =>' without a preceding 'exten =>'")
            parts = split_top(rest, ",", maxsplit=1)
            if len(parts) != 2:
                raise DialplanSyntaxError(f"line {lineno}: expected same => priority,app")
            exten = last_exten
            prio, app_text = (p.strip() for p in parts)
        pm = _PRIORITY_RE.match(prio)
        if pm is None:
            raise DialplanSyntaxError(f"line {lineno}: bad priority {prio!r}")
        lines = plan.contexts[context].setdefault(exten, [])
        if pm.group(1) == "n":
            if not lines:
                raise DialplanSyntaxError(f"line {lineno}: priority n with no priority before it")
            number = lines[-1].priority + 1
        else:
            number = int(pm.group(1))
            if lines and number != lines[-1].priority + 1:
                raise DialplanSyntaxError(f"line {lineno}: priority {number} out of sequence")
        label = pm.group(2)
        if label is not None and any(x.label == label for x in lines):
            raise DialplanSyntaxError(f"line {lineno}: duplicate label {label!r}")
        app, data = split_app(app_text)
        lines.append(Line(lineno, context, exten, len(lines), number, label, app, data))
        last_exten = exten
    return plan


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class Problem:
    rule: str
    lineno: int
    message: str


@dataclass(frozen=True, slots=True)
class AgiCall:
    script: str
    args: dict[str, str]


_AGI_URL_RE = re.compile(r"^\$\{CALLGATE_AGI\}/(?P<script>[^?]*)\?(?P<query>.*)$")
_READ_RE = re.compile(r"\$\{(CALLGATE_[A-Z0-9_]+)")
_NAME_RE = re.compile(r"\bCALLGATE_[A-Z0-9_]+\b")
_RESULT_TEST_RE = re.compile(r'"\$\{CALLGATE_RESULT\}"\s*(!?=)\s*"([^"]*)"')
_IF_FUNC_RE = re.compile(r"\$\{IF\(([^?]*)\?")


def parse_agi(data: str) -> AgiCall | None:
    url = split_top(data, ",")[0].strip()
    m = _AGI_URL_RE.match(url)
    if m is None:
        return None
    args: dict[str, str] = {}
    for pair in split_top(m.group("query"), "&"):
        key, _, value = pair.partition("=")
        args[key] = value
    return AgiCall(m.group("script"), args)


def reads(text: str) -> list[str]:
    return _READ_RE.findall(text)


def parse_assignment(text: str) -> tuple[str, str]:
    """`name=value` (the first `=` outside nesting) -> (name, value)."""
    parts = split_top(text, "=", maxsplit=1)
    return parts[0].strip(), parts[1] if len(parts) > 1 else ""


def assignments(line_app: str, data: str) -> list[tuple[str, str]]:
    app = line_app.lower()
    if app == "set":
        return [parse_assignment(data)]
    if app == "mset":
        return [parse_assignment(part) for part in split_top(data, ",")]
    return []


def condition_and_branches(data: str) -> tuple[str, str | None, str | None]:
    """`cond?true:false` -> (cond, true, false); a missing branch is None."""
    parts = split_top(data, "?", maxsplit=1)
    cond = parts[0]
    if len(parts) == 1:
        return cond, None, None
    rest = parts[1]
    branches = split_top(rest, ":", maxsplit=1)
    true = branches[0].strip() or None
    false = (branches[1].strip() or None) if len(branches) > 1 else None
    return cond, true, false


def extension_matches(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    if not pattern.startswith("_"):
        return False
    regex = ""
    i = 1
    while i < len(pattern):
        ch = pattern[i]
        if ch == "X":
            regex += "[0-9]"
        elif ch == "Z":
            regex += "[1-9]"
        elif ch == "N":
            regex += "[2-9]"
        elif ch == ".":
            regex += ".+"
        elif ch == "!":
            regex += ".*"
        elif ch == "[":
            end = pattern.index("]", i)
            regex += pattern[i : end + 1]
            i = end
        else:
            regex += re.escape(ch)
        i += 1
    return re.fullmatch(regex, name) is not None


Node = tuple[str, str, int]  # (context, extension, index)


def resolve_target(plan: Dialplan, line: Line, target: str) -> tuple[list[Node], str | None]:
    """Resolve a Goto-style target `[[context,]exten,]label|priority` (Gosub args dropped).

    Returns the nodes it can land on and an error when it cannot be shown to exist.
    A variable extension may land on any extension of the context.
    """
    target = re.sub(r"\(.*\)$", "", target.strip())
    parts = [p.strip() for p in split_top(target, ",")]
    if len(parts) == 1:
        context, exten, where = line.context, line.exten, parts[0]
    elif len(parts) == 2:
        context, exten, where = line.context, parts[0], parts[1]
    elif len(parts) == 3:
        context, exten, where = parts
    else:
        return [], f"cannot parse target {target!r}"
    if "${" in context or "${" in where:
        return [], f"target {target!r}: a variable context or label cannot be checked"
    if context not in plan.contexts:
        return [], f"target {target!r}: no context [{context}]"
    extens = plan.contexts[context]
    if "${" in exten:
        candidates = list(extens)
    else:
        candidates = [e for e in extens if extension_matches(e, exten)]
        if not candidates:
            return [], f"target {target!r}: no extension matches {exten!r} in [{context}]"
    nodes: list[Node] = []
    for cand in candidates:
        for x in extens[cand]:
            if (where.isdigit() and x.priority == int(where)) or x.label == where:
                nodes.append((context, cand, x.index))
    if not nodes:
        return [], f"target {target!r}: no label/priority {where!r}"
    return nodes, None


def jump_targets(app: str, data: str) -> list[str]:
    """The Goto-style targets an application line can jump to (ExecIf looked into)."""
    low = app.lower()
    if low in ("goto", "gosub"):
        return [data]
    if low == "gotoif":
        _, t, f = condition_and_branches(data)
        return [x for x in (t, f) if x is not None]
    if low == "execif":
        _, t, f = condition_and_branches(data)
        found: list[str] = []
        for branch in (t, f):
            if branch:
                found.extend(jump_targets(*split_app(branch)))
        return found
    if low == "set":
        name, value = parse_assignment(data)
        if name.replace(" ", "").lower() == "channel(hangup_handler_push)":
            return [value]
    return []


# ----------------------------------------------------------------------------- flow walk


@dataclass(frozen=True, slots=True)
class State:
    last_script: str | None = None  # the script of the last AGI on this path
    result_fresh: bool = False  # CALLGATE_RESULT cleared since the last AGI
    checked: bool = False  # passed a CALLGATE_RESULT == success test since the last AGI
    pushed: bool = False  # the outbound hangup handler is on the stack
    dialed_open: bool = False  # a Dial happened and no callFinish closed it yet
    prior_fresh: bool = False  # the prior variable was set/incremented since the last callPrepare
    redialing: bool = False  # a Dial happened earlier on this path


FALLTHROUGH = "<next>"


@dataclass(slots=True)
class Walk:
    plan: Dialplan
    prior_var: str | None
    problems: set[Problem] = field(default_factory=set)
    prepare_visits: list[tuple[Line, State]] = field(default_factory=list)

    def report(self, rule: str, line: Line, message: str) -> None:
        self.problems.add(Problem(rule, line.lineno, message))

    def check_reads(self, line: Line, text: str, state: State) -> None:
        for name in reads(text):
            if name in OPERATOR_GLOBALS or name not in contract.all_variables():
                continue  # unknown names are reported by the static check
            if state.last_script is None:
                self.report(R_SCOPE, line, f"{name} is read before any callgate AGI on some path")
            elif name not in contract.COMMON_VARIABLES and name not in contract.SCRIPT_VARIABLES.get(
                state.last_script, ()
            ):
                self.report(R_SCOPE, line, f"{name} is read after {state.last_script}, which does not set it")

    def apply(self, line: Line, app: str, data: str, state: State) -> list[tuple[str, State]]:
        """Run one application: the (target, state) pairs it continues with."""
        low = app.lower()
        if low == "agi":
            call = parse_agi(data)
            if call is None:
                return [(FALLTHROUGH, state)]
            if not state.result_fresh:
                self.report(R_STALE, line, "CALLGATE_RESULT is not cleared before this AGI on some path")
            if call.script == contract.SCRIPT_CALL_PREPARE:
                self.prepare_visits.append((line, state))
                if state.dialed_open:
                    self.report(R_FAILOVER, line, "callPrepare runs again before callFinish closed the dial")
                if state.pushed:
                    self.report(R_FAILOVER, line, "callPrepare runs again with the old hangup handler pushed")
                if not state.prior_fresh:
                    self.report(R_FAILOVER, line, "callPrepare runs again without a new prior")
            new = replace(
                state,
                last_script=call.script,
                result_fresh=False,
                checked=False,
                prior_fresh=False if call.script == contract.SCRIPT_CALL_PREPARE else state.prior_fresh,
                dialed_open=False if call.script == contract.SCRIPT_CALL_FINISH else state.dialed_open,
            )
            return [(FALLTHROUGH, new)]
        if low in ("set", "mset"):
            new = state
            for name, value in assignments(app, data):
                key = name.replace(" ", "").lower()
                if name == contract.VAR_RESULT and value == "":
                    new = replace(new, result_fresh=True)
                elif key == "channel(hangup_handler_push)":
                    if new.pushed:
                        self.report(R_FAILOVER, line, "hangup handler pushed twice: a prior would close twice")
                    new = replace(new, pushed=True)
                elif key == "channel(hangup_handler_pop)":
                    new = replace(new, pushed=False)
                elif self.prior_var is not None and name == self.prior_var:
                    bump = rf"\$\[\s*\$\{{{re.escape(self.prior_var)}\}}\s*\+\s*1\s*\]"
                    if value.strip() == "1" or re.fullmatch(bump, value.strip()):
                        new = replace(new, prior_fresh=True)
            return [(FALLTHROUGH, new)]
        if low == "dial":
            if line.context == OUTBOUND and not state.pushed:
                self.report(R_HANDLER, line, "Dial without the callgate hangup handler pushed")
            if not state.checked:
                self.report(R_FAIL_CLOSED, line, "Dial reachable without a CALLGATE_RESULT success test (fails open)")
            if state.last_script != contract.SCRIPT_CALL_PREPARE:
                return [(FALLTHROUGH, state)]  # not a call callgate prepared: nothing to close
            return [(FALLTHROUGH, replace(state, dialed_open=True, redialing=True))]
        if low == "goto":
            return [(data, state)]
        if low == "gosub":
            return [(data, state), (FALLTHROUGH, state)]
        if low == "gotoif":
            cond, t, f = condition_and_branches(data)
            on_true, on_false = self.success_implied(cond, state)
            true_state = replace(state, checked=state.checked or on_true)
            false_state = replace(state, checked=state.checked or on_false)
            return [(t or FALLTHROUGH, true_state), (f or FALLTHROUGH, false_state)]
        if low == "execif":
            cond, t, f = condition_and_branches(data)
            out: list[tuple[str, State]] = []
            for branch in (t, f):
                if branch:
                    out.extend(self.apply(line, *split_app(branch), state))
                else:
                    out.append((FALLTHROUGH, state))
            return out
        if low in TERMINAL_APPS:
            return []
        return [(FALLTHROUGH, state)]

    @staticmethod
    def success_implied(cond: str, state: State) -> tuple[bool, bool]:
        """Whether the true/false branch of `cond` implies CALLGATE_RESULT is the success value."""
        if state.last_script is None or "|" in cond:
            return False, False
        success = SUCCESS.get(state.last_script)
        for op, value in _RESULT_TEST_RE.findall(cond):
            if value == success:
                return (op == "=", op == "!=")
        return False, False

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
                if target == FALLTHROUGH:
                    if index + 1 < len(lines):
                        stack.append(((context, exten, index + 1), new))
                    continue
                nodes, _ = resolve_target(self.plan, line, target)
                stack.extend((n, new) for n in nodes)


# ----------------------------------------------------------------------------- checker


def check(text: str) -> list[Problem]:
    plan = parse(text)
    problems: set[Problem] = set()
    known = contract.all_variables() | OPERATOR_GLOBALS
    prior_vars: set[str] = set()
    entries: list[Node] = []

    for context, extens in plan.contexts.items():
        for exten in extens:
            entries.append((context, exten, 0))

    for line in plan.lines():
        # (2) every CALLGATE_* name, read or written, is in the contract.
        for name in _NAME_RE.findall(line.data):
            if name not in known:
                problems.add(Problem(R_VARIABLE, line.lineno, f"{name} is not in fastagi.contract"))
        # (1) AGI calls.
        if line.app.lower() == "agi":
            call = parse_agi(line.data)
            if call is None:
                problems.add(Problem(R_SCRIPT, line.lineno, "AGI is not ${CALLGATE_AGI}/<script>?<query>"))
                continue
            if call.script not in contract.SCRIPTS:
                problems.add(Problem(R_SCRIPT, line.lineno, f"unknown script {call.script!r}"))
                continue
            for arg in REQUIRED_ARGS[call.script]:
                if not call.args.get(arg):
                    problems.add(Problem(R_ARGS, line.lineno, f"{call.script} without {arg}"))
            if call.script == contract.SCRIPT_CALL_PREPARE:
                m = re.fullmatch(r"\$\{([A-Za-z0-9_]+)\}", call.args.get("prior", ""))
                if m:
                    prior_vars.add(m.group(1))
            if call.script == contract.SCRIPT_CALL_FINISH and line.context == HANGUP:
                for arg, want in (("length", "${CDR(billsec)}"), ("answered_ms", "${ANSWEREDTIME_MS}")):
                    if call.args.get(arg) != want:
                        problems.add(Problem(R_ARGS, line.lineno, f"hangup handler must pass {arg}={want}"))
        # (3) jump and handler targets exist.
        for target in jump_targets(line.app, line.data):
            _, error = resolve_target(plan, line, target)
            if error:
                problems.add(Problem(R_TARGET, line.lineno, error))
        # (5) never branch on AGISTATUS alone.
        conditions: list[str] = _IF_FUNC_RE.findall(line.data)
        if line.app.lower() in BRANCHING_APPS:
            conditions.append(condition_and_branches(line.data)[0])
        for cond in conditions:
            if "AGISTATUS" in cond and "CALLGATE_RESULT" not in cond:
                problems.add(Problem(R_FAIL_CLOSED, line.lineno, "branches on AGISTATUS without CALLGATE_RESULT"))

    if len(prior_vars) > 1:
        problems.add(Problem(R_FAILOVER, 0, f"callPrepare uses several prior variables: {sorted(prior_vars)}"))
    prior_var = next(iter(prior_vars), None)
    if prior_var is None:
        problems.add(Problem(R_FAILOVER, 0, "no callPrepare passes prior=${VARIABLE}"))

    walk = Walk(plan, prior_var)
    walk.run(entries)
    problems |= walk.problems

    # (6) the outbound context has a failover path, triggered by CONGESTION/CHANUNAVAIL, whose
    # callFinish closes the current prior with length 0 and that DIALSTATUS.
    outbound = [x for x in plan.lines() if x.context == OUTBOUND]
    if not any(line.context == OUTBOUND and state.redialing for line, state in walk.prepare_visits):
        problems.add(Problem(R_FAILOVER, 0, "no path re-runs callPrepare after a failed Dial"))
    if not any(
        x.app.lower() == "gotoif" and all(w in x.data for w in ("DIALSTATUS", "CONGESTION", "CHANUNAVAIL"))
        for x in outbound
    ):
        problems.add(Problem(R_FAILOVER, 0, "no failover branch on DIALSTATUS CONGESTION/CHANUNAVAIL"))
    for x in outbound:
        call = parse_agi(x.data) if x.app.lower() == "agi" else None
        if call is None or call.script != contract.SCRIPT_CALL_FINISH:
            continue
        expected = {"length": "0", "status": "${DIALSTATUS}"}
        if prior_var is not None:
            expected["prior"] = f"${{{prior_var}}}"
        for arg, value in expected.items():
            if call.args.get(arg) != value:
                problems.add(Problem(R_FAILOVER, x.lineno, f"failover callFinish must pass {arg}={value}"))

    return sorted(problems, key=lambda p: (p.lineno, p.rule, p.message))


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def text() -> str:
    return DIALPLAN.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def plan(text: str) -> Dialplan:
    return parse(text)


def test_parser_reads_contexts_priorities_and_labels(plan: Dialplan) -> None:
    assert {OUTBOUND, HANGUP, DISA, INBOUND} <= set(plan.contexts)
    outbound = plan.contexts[OUTBOUND]["_X."]
    assert [x.priority for x in outbound] == list(range(1, len(outbound) + 1))
    labels = {x.label for x in outbound}
    assert {"prepare", "allowed", "failover"} <= labels
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


def test_dialplan_is_clean(text: str) -> None:
    assert check(text) == []


def test_every_script_is_called(plan: Dialplan) -> None:
    called = {c.script for x in plan.lines() if x.app.lower() == "agi" and (c := parse_agi(x.data))}
    assert called == set(contract.SCRIPTS)


def test_outbound_pushes_handler_pointing_at_hangup_context(plan: Dialplan) -> None:
    outbound = plan.contexts[OUTBOUND]["_X."]
    first_dial = next(x for x in outbound if x.app.lower() == "dial")
    pushes = [x for x in outbound if "hangup_handler_push" in x.data]
    assert pushes and pushes[0].index < first_dial.index
    assert jump_targets(pushes[0].app, pushes[0].data)[0].startswith(f"{HANGUP},s,1(")


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


MUTATIONS: list[tuple[str, Callable[[str], str], str]] = [
    # (1) scripts and arguments
    ("unknown script", _replace("/callPrepare?", "/callPrepair?"), R_SCRIPT),
    ("hard-coded AGI host", _replace("${CALLGATE_AGI}/authorizeCall", "agi://10.0.0.1/authorizeCall"), R_SCRIPT),
    ("callFinish without answered_ms", _replace("&answered_ms=${ANSWEREDTIME_MS}", ""), R_ARGS),
    ("callPrepare without login", _replace("callPrepare?login=${URIENCODE(${CG_LOGIN})}&", "callPrepare?"), R_ARGS),
    ("authorizeCall without auth", _replace("&auth=${URIENCODE(${CG_AUTH})}", ""), R_ARGS),
    ("resolveDIDRule with empty rule", _replace("&rule=${CG_RULE}", "&rule="), R_ARGS),
    ("handler bills on a constant", _replace("&length=${CDR(billsec)}", "&length=0"), R_ARGS),
    # (2) variables
    ("variable not in contract", _replace("${CALLGATE_MAXTIME}", "${CALLGATE_MAXTIMEOUT}"), R_VARIABLE),
    ("cleared variable not in contract", _replace("CALLGATE_ROUTE_PREFIX=,", "CALLGATE_PREFIX=,"), R_VARIABLE),
    ("variable another script sets", _replace("cost ${CALLGATE_COST}", "cost ${CALLGATE_MAXTIME}"), R_SCOPE),
    (
        "variable read before any AGI",
        _replace("Set(CG_PRIOR=1)", "Set(CG_PRIOR=1)\n same => n,NoOp(${CALLGATE_ROUTE})"),
        R_SCOPE,
    ),
    # (3) targets
    ("missing label", _replace("Goto(prepare)", "Goto(prepar)"), R_TARGET),
    ("missing GotoIf label", _replace('"Allowed"]?allowed)', '"Allowed"]?alowed)'), R_TARGET),
    ("missing context", _replace("Goto(callgate-outbound,", "Goto(callgate-outbund,"), R_TARGET),
    ("missing handler context", _replace("=callgate-hangup,s,1(", "=callgate-hangupx,s,1("), R_TARGET),
    # (4) hangup handler before Dial
    ("no hangup handler", _drop_line("hangup_handler_push"), R_HANDLER),
    # (5) fail closed
    (
        "branch on AGISTATUS instead of the result",
        _replace('"${CALLGATE_RESULT}" = "Allowed"]?allowed', '"${AGISTATUS}" = "SUCCESS"]?allowed'),
        R_FAIL_CLOSED,
    ),
    (
        "fail open: dial unless declined",
        _replace('"${CALLGATE_RESULT}" = "Allowed"]?allowed', '"${CALLGATE_RESULT}" != "Declined"]?allowed'),
        R_FAIL_CLOSED,
    ),
    ("inbound dials without OK", _replace('"${CALLGATE_RESULT}" = "OK"]?rule', '"1" = "1"]?rule'), R_FAIL_CLOSED),
    (
        "stale result before callPrepare",
        _replace("MSet(CALLGATE_RESULT=,CALLGATE_ERROR=,CALLGATE_ANSWER=,CALLGATE_MAXTIME=", "MSet(CALLGATE_MAXTIME="),
        R_STALE,
    ),
    # (6) failover
    ("failover without callFinish", _drop_line("&length=0&answered_ms=0&"), R_FAILOVER),
    ("failover without a new prior", _drop_line("Set(CG_PRIOR=$[${CG_PRIOR} + 1])"), R_FAILOVER),
    ("failover keeps the old handler", _replace("Set(CHANNEL(hangup_handler_pop)=)", "NoOp(kept)"), R_FAILOVER),
    ("no failover loop", _replace(" same => n,Goto(prepare)", " same => n,Hangup()"), R_FAILOVER),
    (
        "failover closes with a made-up status",
        _replace("&answered_ms=0&status=${DIALSTATUS}", "&answered_ms=0&status=ANSWER"),
        R_FAILOVER,
    ),
]


@pytest.mark.parametrize(("mutate", "rule"), [(m, r) for _, m, r in MUTATIONS], ids=[n for n, _, _ in MUTATIONS])
def test_checker_reports_mutation(text: str, mutate: Callable[[str], str], rule: str) -> None:
    mutated = mutate(text)
    assert mutated != text
    problems = check(mutated)
    assert rule in {p.rule for p in problems}, problems


def test_every_rule_is_exercised_by_a_mutation() -> None:
    rules = {R_SCRIPT, R_ARGS, R_VARIABLE, R_SCOPE, R_TARGET, R_HANDLER, R_FAIL_CLOSED, R_STALE, R_FAILOVER}
    assert rules == {rule for _, _, rule in MUTATIONS}
