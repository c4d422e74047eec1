"""One AMI connection to one Asterisk, kept alive by its own task.

A session: TCP connect and the AMI banner (bounded by `connect_timeout_s`), `Login` (bounded
by `action_timeout_s`; `Response: Error` is a refused login), `CoreShowChannels` to rebuild
the channel registry, then the watchdog: a `Ping` every `ping_interval_s`, after which the
server must say something (the Pong, or the events queued before it) every
`ping_timeout_s`. A silent server, a lost socket, an Asterisk `Shutdown`
or any failure ends the session; pending actions fail at once (AsteriskUnavailable) and are
never sent again on the next connection. The next session starts after a back-off:
`reconnect_first_s` doubling to `reconnect_max_s` (+ up to 10 % jitter, so several
callgate processes do not all knock at once); a session that stayed up `stable_after_s`
resets it.

Actions (`action()`) are refused at once while the connection is not up, and bounded by a
time-out; a late answer is dropped. Events go first to the channel registry, then to the
handlers registered with the service: synchronous ones inline, in stream order; async ones
through one queue and one consumer task per connection, each call bounded by
`handler_timeout_s`. Every handler is guarded: one that raises is counted and logged, and
the stream goes on. Every task is owned here and cancelled by `close()`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from billing_core.asterisk.channels import ChannelRegistry
from billing_core.asterisk.errors import AsteriskRefused, AsteriskTimeout, AsteriskUnavailable
from billing_core.asterisk.servers import AmiTarget
from billing_core.asterisk.wire import EVENT_CLASSES, AmiProtocol, build_action, field
from billing_core.errors import ApiError

log = structlog.get_logger(__name__)

SyncHandler = Callable[[str, Any], None]  # (server name, event message)
AsyncHandler = Callable[[str, Any], Awaitable[None]]
_SUCCESS = ("Success", "Follows", "Goodbye")
_LOGGED_FAILURES = 10  # tracebacks per connection before failures are only counted (+ every 1000th)


class State(StrEnum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class AmiTimings:
    connect_timeout_s: float = 3.0
    action_timeout_s: float = 5.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 3.0
    reconnect_first_s: float = 0.5
    reconnect_max_s: float = 30.0
    stable_after_s: float = 10.0
    handler_timeout_s: float = 5.0
    handler_queue_max: int = 10_000


class Handlers:
    """Event handlers shared by every connection of a service; "*" matches every event."""

    def __init__(self) -> None:
        self._sync: dict[str, list[SyncHandler]] = {}
        self._async: dict[str, list[AsyncHandler]] = {}

    def on(self, event: str, handler: SyncHandler) -> None:
        self._sync.setdefault(event, []).append(handler)

    def on_async(self, event: str, handler: AsyncHandler) -> None:
        self._async.setdefault(event, []).append(handler)

    def sync_for(self, event: str) -> list[SyncHandler]:
        return self._sync.get(event, []) + self._sync.get("*", [])

    def async_for(self, event: str) -> list[AsyncHandler]:
        return self._async.get(event, []) + self._async.get("*", [])


class _SessionEnded(Exception):
    """The session is over for a reason worth one log line (not a traceback)."""


class AmiConnection:
    # What panoramisk's protocol reads from its factory. Nothing in awaiting_actions is
    # ever sent again: an action without an answer failed with its connection.
    forgetable_actions: tuple[str, ...] = ("ping", "login")
    save_stream = None

    def __init__(self, target: AmiTarget, timings: AmiTimings, handlers: Handlers | None = None) -> None:
        self.target = target
        self.name = target.name
        self.timings = timings
        self.handlers = handlers or Handlers()
        self.registry = ChannelRegistry(target.name)
        self.state = State.DOWN
        self.last_error = "not connected yet"
        self.connected_at: float | None = None  # wall clock of the current session's login
        self.logins = 0
        self.events = 0
        self.handler_failures = 0
        self.handlers_dropped = 0
        self.awaiting_actions: deque[Any] = deque()
        self._proto: AmiProtocol | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._lost = asyncio.Event()
        self._lost_reason = "connection lost"
        self._up = asyncio.Event()
        self._queue: asyncio.Queue[tuple[AsyncHandler, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"ami:{self.name}"),
                asyncio.create_task(self._consume(), name=f"ami:{self.name}:handlers"),
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._drop("closed")
        self.state = State.CLOSED
        while not self._queue.empty():
            self._queue.get_nowait()

    async def wait_up(self, timeout_s: float) -> bool:
        """True once the connection is up (logged in, registry rebuilt) within timeout_s."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    def drop(self, reason: str) -> None:
        """End the current session now (the run loop reconnects after its back-off)."""
        self._lost_reason = reason
        self._fail_inflight(reason)
        self._lost.set()

    # --- actions -------------------------------------------------------------------------

    async def action(
        self, name: str, fields: Mapping[str, object] | None = None, *, timeout_s: float | None = None,
        as_list: bool | None = None,
    ) -> Any:  # fmt: skip
        """Send one action; its answer (a list for list actions). E_ASTERISK_QUERY_ERROR when
        the server is not up, does not answer within the time-out, or answers Error."""
        proto = self._proto
        if self.state is not State.UP or proto is None:
            raise AsteriskUnavailable(self.name, self.last_error)
        timeout = self.timings.action_timeout_s if timeout_s is None else timeout_s
        return await self._send(proto, build_action(name, fields, as_list=as_list), timeout)

    async def command(self, text: str, *, timeout_s: float | None = None) -> list[str]:
        """A CLI command's output lines: `Output:` headers (Asterisk ≥ 13) or the body of a
        `Response: Follows` (older), whichever the server sends."""
        answer = await self.action("Command", {"Command": text}, timeout_s=timeout_s)
        output = answer.get("Output")
        if output is not None:
            return [str(line) for line in (output if isinstance(output, list) else [output])]
        lines = str(getattr(answer, "content", "")).splitlines()
        return [line for line in lines if line.strip() != "--END COMMAND--"]

    async def _send(
        self, proto: AmiProtocol, act: Any, timeout_s: float, hook: Callable[[Any], None] | None = None
    ) -> Any:
        if proto.closed:  # panoramisk would write to a closed transport and wait for ever
            raise AsteriskUnavailable(self.name, self._lost_reason)
        if hook is not None:
            proto.hooks[act.id] = hook
        future: asyncio.Future[Any] = proto.send(act, as_list=act.as_list)  # send() resets it otherwise
        self._inflight.add(future)
        try:
            async with asyncio.timeout(timeout_s):
                answer = await future
        except TimeoutError:
            raise AsteriskTimeout(self.name, act["Action"], timeout_s) from None
        finally:
            self._inflight.discard(future)
            if not future.done() or future.cancelled():
                proto.forget(act)
        first = answer[0] if isinstance(answer, list) else answer
        if field(first, "Response") not in _SUCCESS:
            raise AsteriskRefused(self.name, act["Action"], field(first, "Message") or "Error", answer)
        return answer

    # --- the session loop ----------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._session()
            except (OSError, ApiError, _SessionEnded) as exc:
                reason = _describe(exc)
            except Exception as exc:  # a bug must not end the reconnects: log it, go on
                log.exception("ami.session_failed", server=self.name)
                reason = _describe(exc)
            self._drop(reason)
            if loop.time() - started >= self.timings.stable_after_s:
                failures = 0
            delay = min(self.timings.reconnect_first_s * 2**failures, self.timings.reconnect_max_s)
            failures += 1
            await asyncio.sleep(delay * (1 + random.uniform(0, 0.1)))

    async def _session(self) -> None:
        self.state = State.CONNECTING
        self._lost.clear()
        self._lost_reason = "connection lost"
        loop = asyncio.get_running_loop()
        t = self.timings
        try:
            async with asyncio.timeout(t.connect_timeout_s):
                _, proto = await loop.create_connection(lambda: AmiProtocol(self), self.target.host, self.target.port)
                self._proto = proto
                await proto.banner
        except TimeoutError:
            raise _SessionEnded(f"no AMI banner within {t.connect_timeout_s:g} s") from None
        login = {"Username": self.target.user, "Secret": self.target.secret, "Events": EVENT_CLASSES}
        try:
            await self._send(proto, build_action("Login", login), t.action_timeout_s)
        except AsteriskRefused as exc:
            raise _SessionEnded(f"login refused: {exc.message}") from None
        rebuild = build_action("CoreShowChannels", as_list=True)
        await self._send(proto, rebuild, t.action_timeout_s, hook=self._rebuilt)
        self.state = State.UP
        self.connected_at = time.time()
        self.logins += 1
        self._up.set()
        log.info("ami.connected", server=self.name, channels=len(self.registry), login=self.logins)
        await self._watch(proto)

    async def _watch(self, proto: AmiProtocol) -> None:
        t = self.timings
        while True:
            try:
                async with asyncio.timeout(t.ping_interval_s):
                    await self._lost.wait()
            except TimeoutError:
                pass
            else:
                raise _SessionEnded(self._lost_reason)
            await self._ping(proto)

    async def _ping(self, proto: AmiProtocol) -> None:
        """One Ping. Its Pong comes after every event Asterisk wrote before it, so while reads
        keep arriving the server is alive and the wait goes on: only `ping_timeout_s` with
        nothing at all from the server ends the session (a burst of events that takes longer
        than that to handle must not look like a dead server)."""
        t = self.timings
        act = build_action("Ping")
        if proto.closed:
            raise AsteriskUnavailable(self.name, self._lost_reason)
        future: asyncio.Future[Any] = proto.send(act, as_list=act.as_list)
        self._inflight.add(future)
        try:
            while True:
                reads = proto.reads
                try:
                    async with asyncio.timeout(t.ping_timeout_s):
                        await asyncio.shield(future)
                    return
                except TimeoutError:
                    if proto.reads == reads:
                        raise _SessionEnded(f"no Pong, and nothing else, within {t.ping_timeout_s:g} s") from None
        finally:
            self._inflight.discard(future)
            if not future.done():
                future.cancel()
                proto.forget(act)

    def _rebuilt(self, answer: Any) -> None:
        vanished = self.registry.replace(answer)
        if vanished:
            log.info("ami.channels_vanished", server=self.name, count=len(vanished))

    def _drop(self, reason: str) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.hooks.clear()
            proto.close()
        self._fail_inflight(reason)
        self.awaiting_actions.clear()
        was_up = self.state is State.UP
        self.state = State.DOWN
        self.last_error = reason
        self._up.clear()
        self.registry.mark_unsynced()
        if reason == "closed":
            log.info("ami.closed", server=self.name)
        elif was_up:
            log.warning("ami.disconnected", server=self.name, reason=reason)
        else:
            log.info("ami.connect_failed", server=self.name, reason=reason)

    def _fail_inflight(self, reason: str) -> None:
        for future in self._inflight:
            if not future.done():
                future.set_exception(AsteriskUnavailable(self.name, reason))

    # --- what panoramisk's protocol calls ------------------------------------------------

    def connection_lost(self, exc: object) -> None:
        if isinstance(exc, Mapping) and field(exc, "Event") == "Shutdown":
            self.drop("Asterisk shut down")
        else:
            self.drop(f"connection lost: {exc}" if exc else "connection closed by Asterisk")

    def dispatch(self, message: Any) -> None:
        self.events += 1
        event = field(message, "Event")
        try:
            self.registry.apply(event, message)
        except Exception:
            self._failed("registry", event)
        for handler in self.handlers.sync_for(event):
            try:
                handler(self.name, message)
            except Exception:
                self._failed(handler, event)
        for async_handler in self.handlers.async_for(event):
            if self._queue.qsize() >= self.timings.handler_queue_max:
                self.handlers_dropped += 1
                continue
            self._queue.put_nowait((async_handler, message))

    async def _consume(self) -> None:
        while True:
            handler, message = await self._queue.get()
            try:
                async with asyncio.timeout(self.timings.handler_timeout_s):
                    await handler(self.name, message)
            except Exception:  # a time-out too: the next event is handled anyway
                self._failed(handler, field(message, "Event"))

    def _failed(self, handler: object, event: str) -> None:
        self.handler_failures += 1
        n = self.handler_failures
        if n <= _LOGGED_FAILURES or n % 1000 == 0:
            name = getattr(handler, "__qualname__", str(handler))
            log.exception("ami.handler_failed", server=self.name, handler=name, ami_event=event, failures=n)

    @property
    def pending_actions(self) -> int:
        """Actions sent on the current connection and not answered yet."""
        return len(self._proto.responses) if self._proto is not None else 0

    def status(self) -> dict[str, Any]:
        return {
            "server": self.name,
            "state": self.state.value,
            "last_error": "" if self.state is State.UP else self.last_error,
            "logins": self.logins,
            "events": self.events,
            "handler_failures": self.handler_failures,
            "channels": len(self.registry),
            "synced": self.registry.synced,
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AsteriskUnavailable):
        return exc.reason
    if isinstance(exc, ApiError):
        return exc.detail
    if isinstance(exc, _SessionEnded):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
