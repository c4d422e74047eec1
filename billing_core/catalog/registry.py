"""One definition per spec method: name, access level, typed arguments, return kind, handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from billing_core.catalog.params import Params
from billing_core.context import Context
from billing_core.records import KeyRecord, UserRecord

ReturnKind = Literal["bool", "json", "text", "binary", "depends"]
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


@dataclass(frozen=True, slots=True)
class MethodDef:
    name: str
    access_level: int
    params: type[Params]
    returns: ReturnKind
    handler: Handler
    invalidates: tuple[str, ...] = ()


class Registry:
    def __init__(self) -> None:
        self._methods: dict[str, MethodDef] = {}

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

    def get(self, name: str) -> MethodDef | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)


REGISTRY = Registry()
