"""The AMI service of one callgate process: one connection per Asterisk server.

It reads the enabled servers that have an AMI user from `asterisk_servers` at start and
every `refresh_s` after (so `callgate asterisk add|remove` reaches a running serve), opens
a connection for each new one, closes removed or disabled ones and reopens changed ones.
A database that is down at a refresh keeps the connections as they are.

Methods that act on live calls (issue 12, later sections) go through `action()` or a
server's registry; a server that is not connected makes only those fail, at once, with
E_ASTERISK_QUERY_ERROR (billing_core.asterisk.errors). FastAGI decisions never touch AMI.
`live_calls()` joins each live call to its holds (reservations keyed by call_uid).

Each serving process (each worker of `callgate serve`) keeps its own connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select

from billing_core.asterisk.channels import Call, Channel, ChannelRegistry
from billing_core.asterisk.connection import AmiConnection, AmiTimings, AsyncHandler, Handlers, State, SyncHandler
from billing_core.asterisk.errors import AsteriskUnavailable
from billing_core.asterisk.servers import AmiTarget, ami_targets
from billing_core.auth.secrets_store import SecretBox
from billing_core.db.engine import Database
from billing_core.ledger.tables import reservations

log = structlog.get_logger(__name__)

_IN_CHUNK = 500  # call_uids per IN (...) list


@dataclass(frozen=True, slots=True)
class CallHold:
    """A hold (billing_core.ledger reservation row) as a live call shows it: whose, how much,
    in which state. Not billing_core.ledger.book.Hold, which is a hold about to be placed."""

    call_uid: str
    prior: int
    account_id: int
    user_id: int
    amount: Decimal
    state: str  # open or expired


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A live call of one server: its channels, since when, and the holds it has."""

    server: str
    linkedid: str
    since: float
    channels: tuple[Channel, ...]
    holds: tuple[CallHold, ...]
    callback: str | None = None  # the createCallback id (CG_CALLBACK) of a callback's two legs

    @property
    def call_uid(self) -> str | None:
        return self.holds[0].call_uid if self.holds else None


class AmiService:
    def __init__(self, db: Database, box: SecretBox, timings: AmiTimings, *, refresh_s: float = 5.0) -> None:
        self.db = db
        self.box = box
        self.timings = timings
        self.refresh_s = refresh_s
        self.handlers = Handlers()
        self._connections: dict[str, AmiConnection] = {}
        self._task: asyncio.Task[None] | None = None

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect to every configured server, and keep following the table."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="ami:servers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections))

    async def _follow(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the database is away: keep what runs, try again
                log.warning("ami.servers_unreadable", error=type(exc).__name__)
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> None:
        """Match the connections to the table (once; `start()` repeats it)."""
        await self.use(await ami_targets(self.db, self.box))

    async def use(self, targets: Sequence[AmiTarget]) -> None:
        """Connect to exactly these servers (tests and `refresh()`)."""
        wanted = {t.name: t for t in targets}
        for name, conn in list(self._connections.items()):
            if wanted.get(name) != conn.target:
                del self._connections[name]
                await conn.close()
                log.info("ami.server_left", server=name)
        for name, target in wanted.items():
            if name not in self._connections:
                conn = AmiConnection(target, self.timings, self.handlers)
                self._connections[name] = conn
                conn.start()

    # --- events --------------------------------------------------------------------------

    def on(self, event: str, handler: SyncHandler) -> None:
        """`handler(server, event)` for every `event` ("*": all) of every server, inline, in
        stream order, after the channel registry has seen it. It must be quick; one that
        raises is counted and logged (the stream goes on)."""
        self.handlers.on(event, handler)

    def on_async(self, event: str, handler: AsyncHandler) -> None:
        """The same for a coroutine: run one at a time per server, in order, each bounded
        by the handler time-out."""
        self.handlers.on_async(event, handler)

    # --- servers -------------------------------------------------------------------------

    def connection(self, server: str) -> AmiConnection:
        conn = self._connections.get(server)
        if conn is None:
            raise AsteriskUnavailable(server, "no AMI for this server (not registered, disabled or no AMI user)")
        return conn

    def for_sip_server(self, sip_server: str) -> AmiConnection:
        """The connection of the server a SIP account's sip_server names."""
        name = sip_server.strip().lower()
        for conn in self._connections.values():
            if name in conn.target.sip_servers:
                return conn
        raise AsteriskUnavailable(sip_server[:128], "no AMI for the server of this sip_server")

    async def action(self, server: str, name: str, fields: Mapping[str, object] | None = None, **kw: Any) -> Any:
        return await self.connection(server).action(name, fields, **kw)

    def registry(self, server: str) -> ChannelRegistry:
        return self.connection(server).registry

    def require_all_up(self) -> None:
        """Every configured server connected now, or AsteriskUnavailable: what a method that
        must see every live channel (closeChannels) needs before it can say "all gone"."""
        if not self._connections:
            raise AsteriskUnavailable("*", "no Asterisk server has AMI configured (callgate asterisk add)")
        for name, conn in sorted(self._connections.items()):
            if conn.state is not State.UP:
                raise AsteriskUnavailable(name, f"AMI {conn.state.value}")

    def up_at(self, address: str) -> bool:
        """Whether a server at `address` (its AMI host, or one of its sip_server names) is
        connected now: what makes a FastAGI call from there supervisable."""
        wanted = address.strip().lower()
        return any(
            conn.state is State.UP and (wanted == conn.target.host.lower() or wanted in conn.target.sip_servers)
            for conn in self._connections.values()
        )

    def statuses(self) -> list[dict[str, Any]]:
        return [conn.status() for _, conn in sorted(self._connections.items())]

    # --- live calls and their holds --------------------------------------------------------

    async def live_calls(self, server: str | None = None) -> list[LiveCall]:
        """Every live call (of one server, or of all), with the holds of its call_uid."""
        conns = [self.connection(server)] if server is not None else list(self._connections.values())
        calls: list[tuple[str, Call]] = [(c.name, call) for c in conns for call in c.registry.calls()]
        holds = await self._holds({uid for _, call in calls for uid in call.candidates})
        out = []
        for name, call in calls:
            found = tuple(h for uid in call.candidates for h in holds.get(uid, ()))
            out.append(LiveCall(name, call.linkedid, call.since, call.channels, found, call.callback))
        return out

    async def _holds(self, call_uids: set[str]) -> dict[str, list[CallHold]]:
        found: dict[str, list[CallHold]] = {}
        uids = sorted(call_uids)
        if not uids:
            return found
        async with self.db.begin() as conn:
            for at in range(0, len(uids), _IN_CHUNK):
                query = (
                    select(reservations)
                    .where(reservations.c.call_uid.in_(uids[at : at + _IN_CHUNK]))
                    .order_by(reservations.c.call_uid, reservations.c.prior)
                )
                for r in await conn.execute(query):
                    hold = CallHold(r.call_uid, r.prior, r.account_id, r.user_id, Decimal(r.amount), r.state)
                    found.setdefault(r.call_uid, []).append(hold)
        return found
