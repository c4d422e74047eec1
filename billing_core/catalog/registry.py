"""One definition per spec method: name, access level, typed arguments, return kind, handler.

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
class MethodDef:
    name: str
    access_level: int
    params: type[Params]
    returns: ReturnKind
    handler: Handler
    invalidates: tuple[str, ...] = ()
    form: str = ""  # a file form's format ("csv"); "" for the method itself


class Registry:
    def __init__(self) -> None:
        self._methods: dict[str, MethodDef] = {}
        self._files: dict[tuple[str, str], MethodDef] = {}

    def method(
        self,
        name: str,
        *,
        level: int,
        params: type[P],
        returns: ReturnKind,
        invalidates: tuple[str, ...] = (),
    ) -> Callable[[Callable[[CallContext[S], P], Awaitable[Any]]], Callable[[CallContext[S], P], Awaitable[Any]]]:
        def register(
            handler: Callable[[CallContext[S], P], Awaitable[Any]],
        ) -> Callable[[CallContext[S], P], Awaitable[Any]]:
            if name in self._methods:
                raise ValueError(f"method {name} defined twice")
            self._methods[name] = MethodDef(name, level, params, returns, handler, invalidates)
            return handler

        return register

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

    def get_file(self, name: str, form: str) -> MethodDef | None:
        return self._files.get((name, form))

    def file_forms(self) -> list[MethodDef]:
        return [self._files[k] for k in sorted(self._files)]

    def names(self) -> list[str]:
        return sorted(self._methods)


REGISTRY = Registry()
