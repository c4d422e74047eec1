"""The AMI wire, on panoramisk's protocol.

Framing (`Key: Value` lines, a blank line ends a message), ActionID matching and the
collection of list answers (`EventList: start` … `…Complete`) are panoramisk's
(`AMIProtocol`, `Action`, `Message`). Its `Manager` is not used: it re-arms reconnect
timers nobody can cancel, sends again after a reconnect any action that had no answer yet
(an Originate could run twice), accepts a refused login without a word, starts coroutine
callbacks as tasks it does not keep, sends pings whose answers it never checks, and bounds
no action in time (docs/ami.md). `billing_core.asterisk.connection` does that part.

What this module adds around panoramisk's protocol:
- the protocol reports to its connection (`ProtocolOwner`), never to a Manager;
- the first line must be the AMI banner, or the connection is refused (`NotAnAmiServer`);
- a read is cut after its last newline before panoramisk decodes it: panoramisk decodes
  each TCP read on its own and would drop a UTF-8 character split between two reads;
- a list action can carry a hook that runs where its list completes in the stream (the
  channel registry is replaced exactly there, so the events after it apply on top);
- keys and values are refused with CR or LF: panoramisk writes `key: value` as given, and a
  newline in a value would smuggle headers (or a whole action) into the request.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol

from billing_core.asterisk.errors import NotAnAmiServer

BANNER = b"Asterisk Call Manager/"
# Event classes asked for at login: channels (call), Cdr (cdr), VarSet (dialplan),
# FullyBooted / Shutdown (system). Not agi or security: nothing here reads them.
EVENT_CLASSES = "system,call,cdr,dialplan"
_KEY = re.compile(r"[A-Za-z0-9_()-]{1,64}")
_LINE_BREAK = re.compile(r"[\r\n]")
# `Secret: x` as sent, and `'Secret': 'x'` as panoramisk's repr of an action shows it
_SECRET = re.compile(r"""(?i)(secret['"]?\s*:\s*['"]?)([^'"\s,}\\]+)""")


class _MaskSecrets(logging.Filter):
    """panoramisk logs an action it failed to send with all its headers, a Login's Secret too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "ecret" in message:
            record.msg, record.args = _SECRET.sub(r"\1***", message), None
        return True


WIRE_LOG = logging.getLogger("billing_core.asterisk.wire")
WIRE_LOG.addFilter(_MaskSecrets())


class ProtocolOwner(Protocol):
    """What panoramisk's protocol asks of its factory, and what this module adds."""

    forgetable_actions: tuple[str, ...]
    awaiting_actions: Any
    save_stream: None

    def dispatch(self, message: Any) -> None: ...

    def connection_lost(self, exc: object) -> None: ...


def build_action(name: str, fields: Mapping[str, object] | None = None, *, as_list: bool | None = None) -> Any:
    """A panoramisk Action with a fresh ActionID. A key that is not a plain header name, or a
    value with a line break, raises ValueError: callers check what users give before."""
    headers: dict[str, object] = {"Action": name}
    for key, value in (fields or {}).items():
        values = value if isinstance(value, list | tuple) else (value,)
        if not _KEY.fullmatch(key) or any(_LINE_BREAK.search(str(v)) for v in values):
            raise ValueError(f"AMI header {key!r} or its value is not one line")
        headers[key] = [str(v) for v in values] if isinstance(value, list | tuple) else str(value)
    if not _KEY.fullmatch(name):
        raise ValueError(f"AMI action name {name!r}")
    return Action(headers, as_list=as_list)


def field(message: Mapping[str, Any], name: str) -> str:
    """One header's value as text (the first, when Asterisk repeated the header)."""
    value = message.get(name, "")
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


class AmiProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk has no type hints
    def __init__(self, owner: ProtocolOwner) -> None:
        super().__init__()
        self.owner = owner
        self.hooks: dict[str, Callable[[Any], None]] = {}
        self.banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.banner.add_done_callback(_retrieve)
        self._tail = b""
        self.reads = 0  # TCP reads so far: the ping watchdog's sign of life

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.factory = self.owner  # panoramisk resets it to None
        self.encoding = "utf8"
        self.log = WIRE_LOG

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        if not cut:
            return
        if not self.banner.done():
            line = data.split(b"\n", 1)[0].strip()
            if not line.startswith(BANNER):
                self.banner.set_exception(NotAnAmiServer(f"not an AMI banner: {line[:60]!r}"))
                self.close()
                return
            self.banner.set_result(line.decode("utf8", "replace"))
        super().data_received(data[:cut])

    def handle_message(self, message: Any) -> None:
        pending = self.responses.get(message.id) if message.id else None
        if pending is None and message.action_id:
            pending = self.responses.get(message.action_id)
        super().handle_message(message)
        if pending is not None and pending.future.done() and not pending.future.cancelled():
            hook = self.hooks.pop(pending.id, None)
            if hook is not None:
                try:
                    hook(pending.future.result())
                except Exception:  # the rest of this read must still be handled
                    WIRE_LOG.exception("ami list hook failed")

    def forget(self, action: Any) -> None:
        """Drop an action that will not be waited for (timed out, cancelled): a late answer
        is then an unmatched message, and panoramisk's table does not keep it for ever."""
        self.responses.pop(action.id, None)
        self.hooks.pop(action.id, None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.banner.done():
            self.banner.set_exception(ConnectionResetError("closed before the AMI banner"))
        super().connection_lost(exc)


def _retrieve(future: asyncio.Future[str]) -> None:
    """Nobody may be waiting for the banner any more: mark its exception as seen."""
    if not future.cancelled():
        future.exception()
