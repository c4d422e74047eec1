"""A real HTTP shim on 127.0.0.1 over a private registry of test methods, and a client
that can call it from any loopback source address (127.0.0.0/8 is all loopback on Linux).

The private registry keeps the auth tests independent of the real methods: one method
per access level the spec uses (0, 1, 22, 33, 50) plus a few answer kinds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from billing_core.api.dispatch import Dispatcher
from billing_core.catalog.params import Int, NoParams, Num, Params, Str
from billing_core.catalog.registry import CallContext, Registry, TextAnswer
from billing_core.container import Services
from billing_core.directory.bans import Bans
from billing_core.http import bound_port, start_http

HOST = "127.0.0.1"


class EchoParams(Params):
    n: Int
    k: Int = 7
    mode: Literal["fast", "slow"] = "fast"
    amount: Num | None = None
    note: Str = ""


class SumParams(Params):
    a: Num
    b: Num


class CallParams(Params):
    n: Int


def _who(ctx: CallContext[Services]) -> dict[str, Any]:
    return {
        "user": ctx.user.username if ctx.user else None,
        "actor": ctx.actor.username if ctx.actor else None,
        "peer": ctx.peer_ip,
        "transport": ctx.transport,
    }


def make_test_registry() -> tuple[Registry, list[str]]:
    """A registry of test methods and the list of method names actually executed."""
    registry = Registry()
    calls: list[str] = []

    @registry.method("anonEcho", level=0, params=NoParams, returns="json")
    async def anon_echo(ctx: CallContext[Services], p: NoParams) -> dict[str, Any]:
        calls.append("anonEcho")
        return _who(ctx)

    @registry.method("userEcho", level=1, params=EchoParams, returns="json")
    async def user_echo(ctx: CallContext[Services], p: EchoParams) -> dict[str, Any]:
        calls.append("userEcho")
        return {**_who(ctx), "n": p.n, "k": p.k, "mode": p.mode, "amount": p.amount, "note": p.note}

    @registry.method("moneySum", level=1, params=SumParams, returns="json")
    async def money_sum(ctx: CallContext[Services], p: SumParams) -> Decimal:
        calls.append("moneySum")
        return p.a + p.b

    @registry.method("resellerOp", level=22, params=NoParams, returns="bool")
    async def reseller_op(ctx: CallContext[Services], p: NoParams) -> bool:
        calls.append("resellerOp")
        return True

    @registry.method("adminOp", level=33, params=NoParams, returns="bool")
    async def admin_op(ctx: CallContext[Services], p: NoParams) -> bool:
        calls.append("adminOp")
        return True

    @registry.method("callOp", level=50, params=CallParams, returns="text")
    async def call_op(ctx: CallContext[Services], p: CallParams) -> TextAnswer:
        calls.append("callOp")
        if p.n > 0:
            return TextAnswer(f"Allowed {p.n}", result="Allowed")
        return TextAnswer("Declined E_INSUFFICIENT_MONEY", result="Declined", ok=False, error="E_INSUFFICIENT_MONEY")

    @registry.method("pdfOp", level=1, params=NoParams, returns="binary")
    async def pdf_op(ctx: CallContext[Services], p: NoParams) -> bytes:
        calls.append("pdfOp")
        return b"%PDF-1.4\n\x00\xff binary"

    @registry.method("boomOp", level=1, params=EchoParams, returns="json")
    async def boom_op(ctx: CallContext[Services], p: EchoParams) -> None:
        calls.append("boomOp")
        raise RuntimeError(f"a bug that quotes its input: {p.note}")

    return registry, calls


def with_settings(services: Services, **changes: Any) -> Services:
    """The same store and cache under other settings (ban whitelist, ban duration …)."""
    settings = replace(services.settings, **changes)
    return replace(services, settings=settings, bans=Bans(services.db, services.cache, settings))


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str]

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal)

    @property
    def code(self) -> Any:
        """The envelope's `response` (the E_* code on failure)."""
        return self.json()["response"]


@dataclass
class Api:
    """Calls the running shim; `source` picks the client's loopback address."""

    port: int
    services: Services
    calls: list[str]
    _sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict)

    def url(self, key: str, method: str, *, version: str = "2.2", query: str = "") -> URL:
        path = f"http://{HOST}:{self.port}/billing/api/{version}/{key}/{method}"
        return URL(path + (f"?{query}" if query else ""), encoded=True)

    def session(self, source: str = HOST) -> aiohttp.ClientSession:
        if source not in self._sessions:
            connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
            self._sessions[source] = aiohttp.ClientSession(connector=connector)
        return self._sessions[source]

    async def request(self, verb: str, url: URL | str, *, source: str = HOST, **kwargs: Any) -> Reply:
        async with self.session(source).request(verb, url, **kwargs) as resp:
            body = await resp.read()
            return Reply(resp.status, resp.content_type, body, dict(resp.headers))

    async def get(
        self,
        key: str,
        method: str,
        args: Mapping[str, str] | None = None,
        *,
        version: str = "2.2",
        source: str = HOST,
    ) -> Reply:
        url = self.url(key, method, version=version, query=urlencode(args or {}))
        return await self.request("GET", url, source=source)

    async def post(self, key: str, method: str, *, source: str = HOST, query: str = "", **kwargs: Any) -> Reply:
        return await self.request("POST", self.url(key, method, query=query), source=source, **kwargs)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()


@asynccontextmanager
async def serve(services: Services, *, test_methods: bool = True) -> AsyncIterator[Api]:
    """The HTTP shim on a free port: over the test registry (methods that record their
    calls), or over the real one (every spec method) with test_methods=False."""
    if test_methods:
        registry, calls = make_test_registry()
        dispatcher = Dispatcher(services, registry=registry)
    else:
        import billing_core.api.methods  # noqa: F401 - registers every method

        dispatcher, calls = Dispatcher(services), []
    runner = await start_http(dispatcher, HOST, 0)
    api = Api(bound_port(runner), services, calls)
    try:
        yield api
    finally:
        await api.close()
        await runner.cleanup()


async def raw_http(port: int, data: bytes) -> bytes:
    """Send raw bytes to the HTTP port and read until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


class LoggedInChecks:
    """`ok` and `code` over a class's own `get(login, method, **args)` (a test world that
    logs each request in as one of its users): the answer of a call that must succeed, and
    the E_* code of one that must fail — as a 400 or a 200, never a 5xx."""

    async def get(self, login: str, method: str, **args: str) -> Reply:
        raise NotImplementedError

    async def ok(self, login: str, method: str, **args: str) -> Any:
        reply = await self.get(login, method, **args)
        assert reply.status == 200 and reply.json()["result"] is True, reply.text
        return reply.json()["response"]

    async def code(self, login: str, method: str, **args: str) -> str:
        reply = await self.get(login, method, **args)
        # query errors (E_MISSING_ARGUMENT, …) are 400, execution errors 200: never a 5xx
        assert reply.status in (200, 400) and reply.json()["result"] is False, (reply.status, reply.text)
        return str(reply.code)
