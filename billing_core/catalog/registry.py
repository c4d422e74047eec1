"""One definition per spec method: name, access level, typed arguments, return kind, handler,
and the names the other front doors know it by (`Aliases`: JeraSoft VCS `module.action`,
ISPsystem BILLmanager `func` verbs).

A method may also have file forms (`Registry.file_form`): the same method answered as a
file (getLogs as CSV), under the method's own name, access level and key restrictions,
with arguments of their own. A file form's handler returns a `FileAnswer`, whose body the
transports stream as it is produced; so will later binary methods (invoices, recordings).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from billing_core.catalog.params import Params
from billing_core.context import Context
from billing_core.records import KeyRecord, UserRecord

ReturnKind = Literal["bool", "json", "text", "binary", "depends", "file"]
# What a BILLmanager function does with its method: `x` lists, `x.edit` shows an object
# (elid, no sok), creates (sok=ok, no elid) or updates (sok=ok and elid), `x.delete`,
# `x.suspend`, `x.resume`; any other dotted function simply calls.
BillmgrRole = Literal["list", "show", "create", "update", "delete", "suspend", "resume", "call"]
_EDIT_ROLES = ("show", "create", "update")
_SUFFIX_ROLES: dict[str, BillmgrRole] = {"delete": "delete", "suspend": "suspend", "resume": "resume"}
P = TypeVar("P", bound=Params)
# The process context a handler asks for: its subsystem's (billing_core.ledger.context, …).
S = TypeVar("S", bound=Context)


@dataclass(frozen=True, slots=True)
class TextAnswer:
    """A text-returning method's answer: the spec's whole line plus its named parts.

    `result` is the line's first word (Allowed, Declined, Saved, OK, FIN, …); `ok` says
    whether the method succeeded (a Declined callPrepare is a successful call of the
    method that answers "no"); `fields` become channel variables over FastAGI.
    """

    text: str
    result: str = ""
    ok: bool = True
    error: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DescribedAnswer:
    """A bool method's answer that says something more: `value` is the answer (true /
    false), `description` goes into the JSON envelope's description (doMaintenance's
    report); a plain answer is only the bool."""

    value: bool
    description: str


@dataclass(frozen=True, slots=True)
class FileAnswer:
    """A file answer: the transports send `chunks` as the HTTP body, as they come (never
    the whole file in memory, never base64 in JSON), with `Content-Disposition:
    attachment; filename=<filename>`. A failure inside `chunks` after the first one can
    only cut the body short, so a handler does its checks and its first read before it
    returns."""

    filename: str
    content_type: str
    chunks: AsyncIterable[bytes]


@dataclass(slots=True)
class CallContext(Generic[S]):
    """Who is calling and what with; built by the dispatcher, read by handlers. Handlers
    name the context they use (`CallContext[LedgerContext]`); the dispatcher passes the
    process's billing_core.container.Services, which has every subsystem's part."""

    services: S
    key: KeyRecord
    user: UserRecord | None  # the authenticated user
    actor: UserRecord | None  # the user the call acts for (`username=`), else `user`
    peer_ip: str
    transport: str
    call_uid: str | None
    generations: dict[str, int] | None
    raw: Mapping[str, str]

    def require_actor(self) -> UserRecord:
        from billing_core.errors import ApiError, ErrorCode

        if self.actor is None:
            raise ApiError(ErrorCode.E_AUTH_FAILED, "this method needs an authorized user")
        return self.actor


Handler = Callable[[CallContext[Any], Any], Awaitable[Any]]
FileHandler = Callable[[CallContext[S], P], Awaitable[FileAnswer]]


@dataclass(frozen=True, slots=True)
class BillmgrVerb:
    """One BILLmanager function of a method: `func`, its role, and arguments it fixes
    (`route.suspend` is updateRouteState with state=false)."""

    func: str
    role: BillmgrRole
    fixed: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> BillmgrVerb:
        """`route` (list), `route.edit#create`, `route.suspend?state=false`, `x.y` (call)."""
        head, _, query = spec.partition("?")
        func, _, role_name = head.partition("#")
        fixed = tuple((k, v) for k, _, v in (pair.partition("=") for pair in query.split("&") if pair))
        stem, dot, action = func.rpartition(".")
        role: BillmgrRole
        if not dot:
            role = "list"
        elif action == "edit":
            if role_name not in _EDIT_ROLES:
                raise ValueError(f"BILLmanager verb {spec!r}: x.edit needs #show, #create or #update")
            role = role_name  # type: ignore[assignment]
        else:
            role = _SUFFIX_ROLES.get(action, "call")
        if (dot and not stem) or (role_name and action != "edit"):
            raise ValueError(f"malformed BILLmanager verb {spec!r}")
        return cls(func, role, fixed)


@dataclass(frozen=True, slots=True)
class Aliases:
    """The names a method has at the other front doors, declared beside it.

    vcs: JeraSoft VCS `module.action` names (`routes.add`).
    billmgr: BILLmanager verbs, parsed by BillmgrVerb.parse.
    elid / plid / elname: the argument BILLmanager's object id, parent id and object name
    fill (for a list method, elid names the row field `x.edit` with elid looks up).
    """

    vcs: tuple[str, ...] = ()
    billmgr: tuple[str, ...] = ()
    elid: str = ""
    plid: str = ""
    elname: str = ""

    def billmgr_verbs(self) -> tuple[BillmgrVerb, ...]:
        return tuple(BillmgrVerb.parse(spec) for spec in self.billmgr)


NO_ALIASES = Aliases()


@dataclass(frozen=True, slots=True)
class MethodDef:
    name: str
    access_level: int
    params: type[Params]
    returns: ReturnKind
    handler: Handler
    invalidates: tuple[str, ...] = ()
    aliases: Aliases = NO_ALIASES
    form: str = ""  # a file form's format ("csv"); "" for the method itself


class Registry:
    def __init__(self) -> None:
        self._methods: dict[str, MethodDef] = {}
        self._vcs: dict[str, MethodDef] = {}
        self._billmgr: dict[tuple[str, BillmgrRole], tuple[MethodDef, BillmgrVerb]] = {}
        self._files: dict[tuple[str, str], MethodDef] = {}

    def method(
        self,
        name: str,
        *,
        level: int,
        params: type[P],
        returns: ReturnKind,
        invalidates: tuple[str, ...] = (),
        aliases: Aliases = NO_ALIASES,
    ) -> Callable[[Callable[[CallContext[S], P], Awaitable[Any]]], Callable[[CallContext[S], P], Awaitable[Any]]]:
        def register(
            handler: Callable[[CallContext[S], P], Awaitable[Any]],
        ) -> Callable[[CallContext[S], P], Awaitable[Any]]:
            if name in self._methods:
                raise ValueError(f"method {name} defined twice")
            method = MethodDef(name, level, params, returns, handler, invalidates, aliases)
            self._add_aliases(method)
            self._methods[name] = method
            return handler

        return register

    def _add_aliases(self, method: MethodDef) -> None:
        for vcs in method.aliases.vcs:
            if vcs in self._vcs or "." not in vcs:
                raise ValueError(f"VCS alias {vcs!r} of {method.name} is taken or not module.action")
        verbs = method.aliases.billmgr_verbs()
        for verb in verbs:
            if (verb.func, verb.role) in self._billmgr:
                raise ValueError(f"BILLmanager verb {verb.func} ({verb.role}) of {method.name} is taken")
        self._vcs.update(dict.fromkeys(method.aliases.vcs, method))
        self._billmgr.update({(verb.func, verb.role): (method, verb) for verb in verbs})

    def file_form(self, name: str, form: str, *, params: type[P]) -> Callable[[FileHandler[S, P]], FileHandler[S, P]]:
        """Declare method `name` (already registered) answered as a `form` file: the same
        access level, the same name for keys' allowed methods, its own arguments."""
        base = self._methods.get(name)
        if base is None:
            raise ValueError(f"file form of an unknown method {name}")
        if not form.isalnum() or not form.islower():
            raise ValueError(f"a file form is a lower-case word, not {form!r}")

        def register(handler: FileHandler[S, P]) -> FileHandler[S, P]:
            if (name, form) in self._files:
                raise ValueError(f"file form {name}.{form} defined twice")
            self._files[(name, form)] = MethodDef(name, base.access_level, params, "file", handler, form=form)
            return handler

        return register

    def get(self, name: str) -> MethodDef | None:
        return self._methods.get(name)

    def vcs(self, name: str) -> MethodDef | None:
        """The method a JeraSoft VCS name calls: a Narayana name or a `module.action` alias."""
        return self._methods.get(name) or self._vcs.get(name)

    def billmgr(self, func: str, role: BillmgrRole) -> tuple[MethodDef, BillmgrVerb] | None:
        return self._billmgr.get((func, role))

    def billmgr_funcs(self) -> set[str]:
        return {func for func, _ in self._billmgr}

    def get_file(self, name: str, form: str) -> MethodDef | None:
        return self._files.get((name, form))

    def file_forms(self) -> list[MethodDef]:
        return [self._files[k] for k in sorted(self._files)]

    def names(self) -> list[str]:
        return sorted(self._methods)


REGISTRY = Registry()
