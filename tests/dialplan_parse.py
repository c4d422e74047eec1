"""A parser for dialplan/extensions.conf, for tests/dialplan_check.py: contexts,
`exten =>`/`same =>` lines, priorities, labels, application calls, jump targets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

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


# Every request goes through [callgate-agi] (node failover): Gosub(callgate-agi,s,1(script?query)).
AGI_CONTEXT = "callgate-agi"
_DIRECT_AGI_RE = re.compile(r"^\$\{CALLGATE_AGI\}/(?P<script>[^?]*)\?(?P<query>.*)$")
_REQUEST_RE = re.compile(r"^callgate-agi\s*,\s*s\s*,\s*1\((?P<script>[^?()]*)\?(?P<query>.*)\)$")
_READ_RE = re.compile(r"\$\{(CALLGATE_[A-Z0-9_]+)")
NAME_RE = re.compile(r"\bCALLGATE_[A-Z0-9_]+\b")
RESULT_TEST_RE = re.compile(r'"\$\{CALLGATE_RESULT\}"\s*(!?=)\s*"([^"]*)"')
IF_FUNC_RE = re.compile(r"\$\{IF\(([^?]*)\?")


def parse_request(app: str, data: str) -> AgiCall | None:
    """`Gosub(callgate-agi,s,1(<script>?<query>))` -> the request; anything else -> None.

    A direct `AGI(${CALLGATE_AGI}/<script>?<query>)` (the dialplan before node failover) is
    read as a request too, so every other rule still applies to it; check_line reports it."""
    if app.lower() == "agi":
        m = _DIRECT_AGI_RE.match(split_top(data, ",")[0].strip())
    elif app.lower() == "gosub":
        m = _REQUEST_RE.match(data.strip())
    else:
        return None
    if m is None:
        return None
    args: dict[str, str] = {}
    for pair in split_top(m.group("query"), "&"):
        key, _, value = pair.partition("=")
        args[key] = value
    return AgiCall(m.group("script"), args)


def is_hook(target: str) -> bool:
    """A Gosub into the operator's own context (CALLGATE_HOOKS): not ours to walk or resolve."""
    return target.strip().startswith("${CALLGATE_HOOKS}")


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
        return [] if is_hook(data) else [data]
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




FALLTHROUGH_MARK = "<next>"  # a walk target: the next priority of the same extension
