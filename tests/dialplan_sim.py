"""Runs dialplan/extensions.conf the way Asterisk 22 does, for the applications it uses, with
FastAGI requests going to a real callgate server through tests/asterisk_sim.py.

What it models is what ../shared/agi/README.md ("Observed on Asterisk 22.10.1") and app_dial.c
/ res_agi.c / app_read.c / func_strings.c say, not what the dialplan hopes:
- an application's data is substituted whole before it runs (ExecIf's untaken branch too);
- a caller who hangs up while an AGI runs: Asterisk writes HANGUP after the env block, the AGI
  still gets its answer, then the dialplan stops and the hangup handlers run (017);
- in a hangup handler CDR(billsec) is 0 (016, 020, 027); ANSWEREDTIME_MS is the CALLER
  channel's up time (app_dial.c: ast_channel_get_up_time_ms(chan)); Dial's U() runs on the
  called channel at its answer; the ring time-out ends an unanswered Dial with NOANSWER;
- Read() without input sets READSTATUS=TIMEOUT and an empty variable (021-023);
- an unreachable agi:// leaves AGISTATUS=FAILURE and sets nothing.
Time is a simulated clock; nothing sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from tests.asterisk_sim import run_agi_session
from tests.dialplan_parse import Dialplan, condition_and_branches, extension_matches, split_app, split_top


@dataclass
class DialOutcome:
    """What happens to one Dial: DIALSTATUS, seconds ringing, seconds talked, who ends it."""

    status: str  # ANSWER, NOANSWER, BUSY, CONGESTION, CHANUNAVAIL
    ring_s: float = 0.0
    talk_s: float = 0.0
    caller_hangs_up: bool = False  # else the called party (or the time limit) ends the call


@dataclass
class Caller:
    """The calling side: DTMF strings for each Read (None: nothing entered), hang-ups."""

    reads: list[str | None] = field(default_factory=list)
    dials: list[DialOutcome] = field(default_factory=list)
    hangup_during: str | None = None  # a script name: the caller hangs up while it runs
    hangup_before: str | None = None  # an application: the caller is gone when it would start
    channel: str = "PJSIP/10000-00000001"
    callerid: str = "79020000002"


class Hangup(Exception):
    """The caller hung up: the PBX stops this dialplan and runs the hangup handlers."""


class _Return(Exception):
    """Return() ends the innermost Gosub."""


@dataclass
class Run:
    """What the run did, for the test's assertions."""

    requests: list[str] = field(default_factory=list)  # agi_network_script of each AGI
    dials: list[tuple[str, str, str]] = field(default_factory=list)  # (target, timeout, options)
    logs: list[tuple[str, str]] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)  # Playback's argument, as substituted


class DialplanSim:
    def __init__(self, plan: Dialplan, globals_: dict[str, str], caller: Caller, *, uniqueid: str) -> None:
        self.plan, self.globals, self.caller, self.uniqueid = plan, globals_, caller, uniqueid
        self.now = 1_796_177_890.0
        self.vars: dict[str, str] = {}
        self.shared: dict[str, dict[str, str]] = {caller.channel: {}}
        self.handlers: list[str] = []
        self.answered_at: float | None = None
        self.frames: list[dict[str, str | None]] = []  # LOCAL() saves per Gosub
        self.dead = False
        self.run = Run()
        # runs when a Dial is answered, before the talk time passes (a callback's leg 2
        # starts there, while leg 1 is up and holding)
        self.on_answer: Callable[[], Awaitable[None]] | None = None

    # -- variables and functions ---------------------------------------------------------
    def get(self, name: str) -> str:
        for source in (self.vars, self.globals):
            if name in source:
                return source[name]
        return ""

    def set(self, name: str, value: str) -> None:
        m = re.fullmatch(r"(\w+)\((.*)\)", name)
        if m is None:
            self.vars[name] = value
            return
        func, arg = m.group(1).upper(), m.group(2)
        if func == "LOCAL":
            if self.frames and arg not in self.frames[-1]:
                self.frames[-1][arg] = self.vars.get(arg)
            self.vars[arg] = value
        elif func == "SHARED":
            var, _, chan = arg.partition(",")
            self.shared.setdefault(chan or self.caller.channel, {})[var] = value
        elif func == "CHANNEL" and arg == "hangup_handler_push":
            self.handlers.append(value)
        elif func == "CHANNEL" and arg == "hangup_handler_pop":
            if self.handlers:
                self.handlers.pop()
        elif func == "CALLERID":
            self.vars["__CALLERID"] = value
        else:
            raise NotImplementedError(f"Set({name})")

    def function(self, name: str, arg: str) -> str:
        args = split_top(arg, ",")
        functions: dict[str, Callable[[], str]] = {
            "URIENCODE": lambda: quote(arg, safe=""),
            "CHANNEL": lambda: self._channel(arg),
            "CALLERID": lambda: self.vars.get("__CALLERID", self.caller.callerid),
            "CDR": lambda: "0",  # billsec in a hangup handler on Asterisk 22: the row opened at hangup
            "SHARED": lambda: self.shared.get(args[1] if len(args) > 1 else self.caller.channel, {}).get(args[0], ""),
            "STRFTIME": lambda: self._strftime(args),
            "EPOCH": lambda: str(int(self.now)),
            "MATH": lambda: str(int(_number(self.expr(args[0])))),
            "CUT": lambda: self.get(args[0]).split(args[1] or "-")[int(args[2]) - 1],
            "REGEX": lambda: _regex(arg),
            "IF": lambda: _if(arg),
            "DIALPLAN_EXISTS": lambda: "1" if args[0] in self.plan.contexts else "0",
            "LOCAL": lambda: self.get(arg),
        }
        if name not in functions:
            raise NotImplementedError(f"function {name}")
        return functions[name]()

    def _channel(self, item: str) -> str:
        if item == "name":
            return self.caller.channel
        if item == "channeltype":
            return self.caller.channel.split("/")[0]
        assert item == "endpoint", item
        return self._endpoint()

    def _endpoint(self) -> str:
        if not self.caller.channel.startswith("PJSIP/"):
            self.run.logs.append(("WARNING", "CHANNEL(endpoint) on a non-PJSIP channel"))
            return ""
        return self.caller.channel.split("/")[1].rsplit("-", 1)[0]

    def _strftime(self, args: list[str]) -> str:
        assert args[1:] == ["UTC", "%s%3q"], args  # the only form the dialplan uses
        return str(round(self.now * 1000))

    def subst(self, text: str) -> str:
        """${...} and $[...], innermost first, like pbx_substitute_variables_helper."""
        out, i = [], 0
        while i < len(text):
            if not (text.startswith("${", i) or text.startswith("$[", i)):
                out.append(text[i])
                i += 1
                continue
            opening = text[i + 1]
            closing = "}" if opening == "{" else "]"
            depth, j = 1, i + 2
            while depth and j < len(text):
                depth += (text[j] == opening) - (text[j] == closing)
                j += 1
            inner = self.subst(text[i + 2 : j - 1])
            out.append(self._variable(inner) if opening == "{" else self.expr(inner))
            i = j
        return "".join(out)

    def _variable(self, inner: str) -> str:
        m = re.fullmatch(r"([A-Z_]+)\((.*)\)", inner, re.S)
        if m:
            return self.function(m.group(1), m.group(2))
        sub = re.fullmatch(r"(\w+):(-?\d+)(?::(-?\d+))?", inner)
        if sub:  # ${VAR:offset[:length]}, negative counting from the end, as Asterisk does
            value, offset = self.get(sub.group(1)), int(sub.group(2))
            rest = value[offset:] if offset >= 0 else value[max(len(value) + offset, 0) :]
            if sub.group(3) is None:
                return rest
            length = int(sub.group(3))
            return rest[:length] if length >= 0 else rest[: max(len(rest) + length, 0)]
        return self.get(inner)

    def expr(self, text: str) -> str:
        return _format(_Expr(text).parse())

    # -- applications ----------------------------------------------------------------
    async def call(self, context: str, exten: str, priority: int = 1) -> None:
        """Run from context,exten,priority until Hangup/Return or the end; hangup handlers at the end."""
        try:
            await self._walk(context, exten, priority)
        except Hangup:
            pass
        self.dead = True
        while self.handlers:
            await self.gosub(self.handlers.pop())

    async def gosub(self, target: str) -> None:
        """Run `context,exten,priority` as a subroutine (a hangup handler, on its own)."""
        head, _, args = target.partition("(")
        ctx, ext, prio = (x.strip() for x in split_top(head, ","))
        await self._gosub(ctx, ext, prio, split_top(args[:-1], ",") if args else [])

    async def _walk(self, context: str, exten: str, priority: int) -> None:
        lines = self._extension(context, exten)
        index = next(x.index for x in lines if x.priority == priority)
        while index < len(lines):
            line = lines[index]
            jump = await self.exec(line.app, self.subst(line.data), context, exten)
            if jump is None:
                index += 1
                continue
            context, exten, where = jump
            lines = self._extension(context, exten)
            index = next(x.index for x in lines if x.label == where or str(x.priority) == where)

    def _extension(self, context: str, exten: str) -> list:  # type: ignore[type-arg]
        extens = self.plan.contexts[context]
        name = next(e for e in extens if extension_matches(e, exten))
        self.vars["EXTEN"] = exten
        return extens[name]

    def _target(self, target: str, context: str, exten: str) -> tuple[str, str, str]:
        parts = [p.strip() for p in split_top(target, ",")]
        if len(parts) == 1:
            return context, exten, parts[0]
        if len(parts) == 2:
            return context, parts[0], parts[1]
        return parts[0], parts[1], parts[2]

    async def exec(self, app: str, data: str, context: str, exten: str) -> tuple[str, str, str] | None:
        low = app.lower()
        if not self.dead and self.caller.hangup_before == app:
            raise Hangup  # the PBX checks for a hangup before each priority
        self.run.apps.append(app)
        if low in ("noop", "answer", "playback", "verbose"):
            if low == "answer" and self.answered_at is None:
                self.answered_at = self.now
            if low == "playback":
                self.run.played.append(data)
                self.now += 0.2
            return None
        if low == "set":
            name, _, value = data.partition("=")
            self.set(name, value)
        elif low == "mset":
            for part in split_top(data, ","):
                name, _, value = part.partition("=")
                self.set(name, value)
        elif low == "log":
            level, _, message = data.partition(",")
            self.run.logs.append((level, message))
        elif low in ("hangup", "congestion", "busy"):
            raise Hangup
        elif low == "return":
            raise _Return
        elif low == "goto":
            return self._target(data, context, exten)
        elif low in ("gotoif", "execif"):
            cond, t, f = condition_and_branches(data)
            branch = t if _number(cond or "0") else f
            if branch and low == "gotoif":
                return self._target(branch, context, exten)
            if branch:
                return await self.exec(*split_app(branch), context, exten)
        elif low == "gosub":
            head, _, args = data.partition("(")
            ctx, ext, prio = self._target(head, context, exten)
            await self._gosub(ctx, ext, prio, split_top(args[:-1], ",") if args else [])
        elif low == "agi":
            await self._agi(data)
        elif low == "read":
            self._read(split_top(data, ","))
        elif low == "dial":
            await self._dial(split_top(data, ","))
        else:
            raise NotImplementedError(app)
        return None

    async def _gosub(self, context: str, exten: str, where: str, args: list[str]) -> None:
        self.frames.append({})
        saved = {f"ARG{i}": self.vars.get(f"ARG{i}") for i in range(1, 10)} | {"EXTEN": self.vars.get("EXTEN")}
        for i in range(1, 10):
            self.vars.pop(f"ARG{i}", None)
        self.vars.update({f"ARG{i}": a for i, a in enumerate(args, 1)})
        lines = self._extension(context, exten)
        priority = next(x.priority for x in lines if x.label == where or str(x.priority) == where)
        try:
            await self._walk(context, exten, priority)
        except _Return:
            pass
        finally:
            for name, old in {**saved, **self.frames.pop()}.items():
                if old is None:
                    self.vars.pop(name, None)
                else:
                    self.vars[name] = old

    async def _agi(self, url: str) -> None:
        m = re.fullmatch(r"agi://([^:/]+):(\d+)/([^?]*)\??(.*)", url)
        assert m is not None, url
        host, port, script, query = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        self.run.requests.append(f"{script}?{query}")
        hang_now = not self.dead and self.caller.hangup_during == script
        try:
            result = await run_agi_session(host, port, script, query=query, uniqueid=self.uniqueid,
                                           extra_env={"agi_channel": self.caller.channel},
                                           hangup_after_env=hang_now)  # fmt: skip
        except (OSError, TimeoutError):
            self.vars["AGISTATUS"] = "FAILURE"
            return
        self.vars.update(result.variables)
        self.vars["AGISTATUS"] = "HANGUP" if hang_now else "SUCCESS"
        if hang_now:
            raise Hangup  # res_agi returns -1 on a hung-up channel: the dialplan stops (017)

    def _read(self, args: list[str]) -> None:
        entered = self.caller.reads.pop(0) if self.caller.reads else None
        timeout = float(args[5]) if len(args) > 5 and args[5] else 6.0
        self.now += 0.2 + (timeout if entered is None else 0.35 * (len(entered) + 1))
        self.vars[args[0]] = entered or ""
        self.vars["READSTATUS"] = "OK" if entered else "TIMEOUT"

    async def _dial(self, args: list[str]) -> None:
        target, timeout, options = args[0], args[1] if len(args) > 1 else "", args[2] if len(args) > 2 else ""
        self.run.dials.append((target, timeout, options))
        self.vars.update({"DIALSTATUS": "", "ANSWEREDTIME_MS": "", "ANSWEREDTIME": ""})
        outcome = self.caller.dials.pop(0)
        limit = float(timeout) if timeout else None
        if outcome.status == "ANSWER" and limit is not None and outcome.ring_s > limit:
            outcome = DialOutcome("NOANSWER", ring_s=outcome.ring_s)
        if outcome.status != "ANSWER":
            self.now += min(outcome.ring_s, limit) if limit is not None else outcome.ring_s
            self.vars["DIALSTATUS"] = outcome.status
            if outcome.caller_hangs_up:
                raise Hangup
            return
        self.now += outcome.ring_s
        gosub = re.search(r"U\(([^)^]*)\^?([^)]*)\)", options)
        if gosub:  # on the called channel, before the bridge
            await self._gosub(gosub.group(1), "s", "1", gosub.group(2).split("^") if gosub.group(2) else [])
        if self.answered_at is None:
            self.answered_at = self.now  # Dial answers the caller when the callee answers
        if self.on_answer is not None:
            await self.on_answer()
        limit_ms = re.search(r"L\((\d+)", options)
        talk = min(outcome.talk_s, int(limit_ms.group(1)) / 1000) if limit_ms else outcome.talk_s
        self.now += talk
        self.vars["DIALSTATUS"] = "ANSWER"
        self.vars["ANSWEREDTIME_MS"] = str(round((self.now - self.answered_at) * 1000))  # caller's up time
        if outcome.caller_hangs_up:
            raise Hangup


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0 if text.strip() else 0.0


def _format(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if value == int(value) else repr(value)


def _regex(arg: str) -> str:
    m = re.fullmatch(r'"(.*)" (.*)', arg, re.S) or re.fullmatch(r'"(.*)"()', arg.rstrip(), re.S)
    assert m is not None, arg
    return "1" if re.search(m.group(1), m.group(2)) else "0"


def _if(arg: str) -> str:
    cond, t, f = condition_and_branches(arg)
    return (t or "") if _number(cond) else (f or "")


class _Expr:
    """Asterisk's $[...] for what the dialplan uses: | & = != < > <= >= + - * / % ( ), quoted strings."""

    _TOKEN = re.compile(r'\s*("(?:[^"]*)"|!=|<=|>=|[|&=<>+\-*/%()]|[^\s|&=<>+\-*/%()"]+)')
    _LEVELS = (("|",), ("&",), ("=", "!=", "<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = [t for t in self._TOKEN.findall(text) if t]
        self.pos = 0

    def parse(self) -> float | str:
        return self._level(0)

    def _level(self, level: int) -> float | str:
        if level == len(self._LEVELS):
            return self._atom()
        left = self._level(level + 1)
        while self.pos < len(self.tokens) and self.tokens[self.pos] in self._LEVELS[level]:
            op = self.tokens[self.pos]
            self.pos += 1
            left = _apply(op, left, self._level(level + 1))
        return left

    def _atom(self) -> float | str:
        token = self.tokens[self.pos]
        self.pos += 1
        if token == "(":
            inner: float | str = self._level(0)
            self.pos += 1
            return inner
        if token == "-" and self.pos < len(self.tokens):
            return -_number(str(self._atom()))
        text = token[1:-1] if token.startswith('"') else token
        try:
            return float(text)
        except ValueError:
            return text


def _apply(op: str, a: float | str, b: float | str) -> float | str:
    if op == "|":
        return a if _number(str(a)) else b
    if op == "&":
        return b if _number(str(a)) and _number(str(b)) else 0.0
    if op in ("+", "-", "*", "/", "%"):
        x, y = _number(str(a)), _number(str(b))
        return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else 0.0, "%": x % y if y else 0.0}[op]
    both = isinstance(a, float) and isinstance(b, float)
    left, right = (a, b) if both else (_format(a), _format(b))
    result = {"=": left == right, "!=": left != right, "<": left < right, ">": left > right,  # type: ignore[operator]
              "<=": left <= right, ">=": left >= right}[op]  # type: ignore[operator]  # fmt: skip
    return 1.0 if result else 0.0
