"""A fake Asterisk manager interface (AMI) that speaks the real protocol, for tests and bench.

Built from what a real Asterisk 22.10.1 sent (`../shared/agi/transcripts/ami-session-raw.txt`,
copied under tests/fixtures) and the AMI facts of `../shared/agi/README.md`:
- the banner line `Asterisk Call Manager/11.0.0` first, before anything is asked;
- `Key: Value` lines ending in CRLF, a blank line ending each message; every response
  echoes the action's `ActionID`;
- `Login` answers `Response: Success` / `Message: Authentication accepted`, then the event
  `FullyBooted`; a wrong secret answers `Response: Error` / `Authentication failed` and the
  session is closed (manager.c ends it); other actions before a login: `Permission denied`;
- `Ping` answers `Ping: Pong` and a `Timestamp`;
- `CoreShowChannels` answers `EventList: start` / `Channels will follow`, one
  `CoreShowChannel` event per channel carrying the ActionID, then
  `CoreShowChannelsComplete` / `EventList: Complete` / `ListItems: n`, written at once;
- `Command` answers `Message: Command output follows` with `Output:` lines (Asterisk ≥ 13),
  or the `Response: Follows` body ending in `--END COMMAND--` (older servers) with
  `legacy_command`;
- an unknown action: `Response: Error` / `Invalid/unknown command: X. Use Action:
  ListCommands to show available commands.`
- events interleave with responses in one stream; they reach logged-in sessions only.

The fake keeps its own table of channels from the events it emits (Newchannel adds,
Hangup removes, a ChannelState updates), so CoreShowChannels lists what the events said,
and `forget_channel` / `add_channel` change the table without an event (what happens
while a client is disconnected). Controls for the failures the client must survive:
`kill(partial)` (the connection dies mid-event), `stop_pings()` (a server that stops
answering), `silent` / `delays` (actions never answered, or answered late). No tasks:
one asyncio.Protocol per session, late answers on loop timers that `close()` cancels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

TRANSCRIPT = Path(__file__).parent / "fixtures/shared/agi/transcripts/ami-session-raw.txt"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
USER, SECRET = "callgate", "ami-s3cret"
_END = b"\r\n\r\n"
_STATE_DESC = {"0": "Down", "4": "Ring", "5": "Ringing", "6": "Up"}
_CHANNEL_FIELDS = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
    "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid", "Linkedid",
)  # fmt: skip

Message = dict[str, str]


def read_transcript(path: Path = TRANSCRIPT) -> list[Message]:
    """Every message of the recorded session, in order (the banner line dropped)."""
    raw = path.read_bytes().decode("utf8")
    body = raw.split("\r\n", 1)[1]
    messages = []
    for block in body.split("\r\n\r\n"):
        fields: Message = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep and key not in fields:
                fields[key] = value
            elif line.endswith(":"):
                fields.setdefault(line[:-1], "")  # "AccountCode: " lost its space to strip
        if fields:
            messages.append(fields)
    return messages


def transcript_events(path: Path = TRANSCRIPT) -> list[Message]:
    """The events Asterisk broadcast during the session (not the list items of its
    CoreShowChannels answer, which belong to that action)."""
    lists = ("CoreShowChannel", "CoreShowChannelsComplete")
    return [m for m in read_transcript(path) if "Event" in m and m["Event"] not in lists]


def encode(fields: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode("utf8") + b"\r\n"


class FakeAmi:
    def __init__(self, *, user: str = USER, secret: str = SECRET) -> None:
        self.user, self.secret = user, secret
        self.port = 0
        self.channels: dict[str, Message] = {}
        self.created: dict[str, float] = {}
        self.actions: list[Message] = []  # every action received, in order
        self.action_lines: list[list[tuple[str, str]]] = []  # the same, every header (repeated ones too)
        # Originate (Async): answered "successfully queued", then an OriginateResponse with
        # this (Response, Reason) after originate_delay_s; originate_error: refused at once
        self.originate_result: tuple[str, str] = ("Success", "4")
        self.originate_delay_s = 0.0
        self.originate_error = ""
        self.originates = 0
        self.reloads: list[str] = []  # the Module of every Reload action
        self.reload_error = ""  # e.g. "No such module.": Reload answered Error
        self.connections = 0
        self.logins = 0
        self.closed_by_client = 0
        self.silent: set[str] = set()  # action names (lower case) never answered
        self.delays: dict[str, float] = {}  # action name (lower case) -> answer after s
        self.legacy_command = False
        self.command_output = ["Asterisk 22.10.1 built by fake"]
        self.after_list: list[Message] = []  # events written in the same write as the next list
        # more actions (lower-case name -> what to do), answered by the caller: bench/ami_events.py
        self.custom: dict[str, Callable[[Session, Message], None]] = {}
        self.sessions: set[Session] = set()
        self._server: asyncio.Server | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeAmi:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Session(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # --- what the server does ------------------------------------------------------------

    def emit(self, *events: Mapping[str, str]) -> None:
        """Events as Asterisk would raise them: the table follows, logged-in sessions get them."""
        data = b"".join(self._track(e) for e in events)
        for session in list(self.sessions):
            if session.logged_in:
                session.write(data)

    def emit_raw(self, data: bytes) -> None:
        for session in list(self.sessions):
            if session.logged_in:
                session.write(data)

    def add_channel(self, uniqueid: str, name: str, *, linkedid: str = "", state: str = "6") -> None:
        """A channel that appears without its Newchannel reaching anyone."""
        self._track(newchannel(uniqueid, name, linkedid=linkedid, state=state))

    def forget_channel(self, uniqueid: str) -> None:
        """A channel that hangs up without its Hangup reaching anyone."""
        self.channels.pop(uniqueid, None)

    def kill(self, partial: bytes = b"") -> None:
        """Every session dies now, after writing `partial` (half an event, say)."""
        for session in list(self.sessions):
            if partial:
                session.transport.write(partial)
            session.transport.close()

    def stop_pings(self) -> None:
        """The current sessions stay open but never answer a Ping again."""
        for session in self.sessions:
            session.answer_pings = False

    async def wait_for(self, what: str, count: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while getattr(self, what) < count:  # noqa: ASYNC110 - counters, not events
                await asyncio.sleep(0.005)

    def _track(self, event: Mapping[str, str]) -> bytes:
        name, uid = event.get("Event", ""), event.get("Uniqueid", "")
        if name == "Newchannel" and uid:
            self.channels[uid] = {k: event.get(k, "") for k in _CHANNEL_FIELDS}
            self.created[uid] = time.monotonic()
        elif name == "Hangup":
            self.channels.pop(uid, None)
        elif uid in self.channels and "ChannelState" in event:
            self.channels[uid]["ChannelState"] = event["ChannelState"]
            self.channels[uid]["ChannelStateDesc"] = event.get("ChannelStateDesc", "")
        return encode(event)

    def later(self, delay_s: float, callback: object) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(delay_s, callback)  # type: ignore[arg-type]
        self._timers.add(timer)

    def core_show_channels(self, action_id: str) -> bytes:
        items = [encode([("Response", "Success"), ("ActionID", action_id), ("EventList", "start"),
                         ("Message", "Channels will follow")])]  # fmt: skip
        now = time.monotonic()
        for uid, fields in self.channels.items():
            seconds = int(now - self.created.get(uid, now))
            duration = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            extra = [("Application", "Dial"), ("ApplicationData", ""), ("Duration", duration), ("BridgeId", "")]
            items.append(encode([("Event", "CoreShowChannel"), ("ActionID", action_id), *fields.items(), *extra]))
        items.append(encode([("Event", "CoreShowChannelsComplete"), ("ActionID", action_id),
                             ("EventList", "Complete"), ("ListItems", str(len(self.channels)))]))  # fmt: skip
        items.extend(self._track(event) for event in self.after_list)
        self.after_list = []
        return b"".join(items)


def newchannel(uniqueid: str, name: str, *, linkedid: str = "", state: str = "4", exten: str = "") -> Message:
    return {
        "Event": "Newchannel", "Privilege": "call,all", "Timestamp": f"{time.time():.6f}", "Channel": name,
        "ChannelState": state, "ChannelStateDesc": _STATE_DESC.get(state, "Unknown"), "CallerIDNum": "<unknown>",
        "CallerIDName": "<unknown>", "ConnectedLineNum": "<unknown>", "ConnectedLineName": "<unknown>",
        "Language": "en", "AccountCode": "", "Context": "callgate-outbound", "Exten": exten or "4915112345678",
        "Priority": "1", "Uniqueid": uniqueid, "Linkedid": linkedid or uniqueid,
    }  # fmt: skip


def hangup(uniqueid: str, name: str, *, linkedid: str = "", cause: str = "16") -> Message:
    return {
        "Event": "Hangup", "Privilege": "call,all", "Timestamp": f"{time.time():.6f}", "Channel": name,
        "ChannelState": "6", "ChannelStateDesc": "Up", "Uniqueid": uniqueid, "Linkedid": linkedid or uniqueid,
        "Cause": cause, "Cause-txt": "Normal Clearing",
    }  # fmt: skip


def var_set(uniqueid: str, name: str, variable: str, value: str, *, linkedid: str = "") -> Message:
    return {
        "Event": "VarSet", "Privilege": "dialplan,all", "Channel": name, "ChannelState": "4",
        "Uniqueid": uniqueid, "Linkedid": linkedid or uniqueid, "Variable": variable, "Value": value,
    }  # fmt: skip


class Session(asyncio.Protocol):
    def __init__(self, fake: FakeAmi) -> None:
        self.fake = fake
        self.logged_in = False
        self.answer_pings = True
        self._buffer = b""
        self._closed = False
        self.transport: Any = None  # uvloop's transports do not subclass asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.fake.connections += 1
        self.fake.sessions.add(self)
        self.transport.write(BANNER)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.fake.sessions.discard(self)

    def eof_received(self) -> bool | None:
        self.fake.closed_by_client += 1
        return None

    def write(self, data: bytes) -> None:
        if not self._closed and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while _END in self._buffer:
            block, self._buffer = self._buffer.split(_END, 1)
            fields: Message = {}
            lines: list[tuple[str, str]] = []
            for line in block.decode("utf8", "replace").split("\r\n"):
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                lines.append((key.strip(), value.strip()))
            self.fake.actions.append(fields)
            self.fake.action_lines.append(lines)
            self._received(fields)

    def _received(self, action: Message) -> None:
        name = action.get("Action", "").lower()
        if name in self.fake.silent:
            return
        delay = self.fake.delays.get(name)
        if delay:
            self.fake.later(delay, lambda: self._answer(name, action))
        else:
            self._answer(name, action)

    def reply(self, action: Message, response: str, *pairs: tuple[str, str]) -> None:
        head = [("Response", response)]
        if "ActionID" in action:
            head.append(("ActionID", action["ActionID"]))
        self.write(encode([*head, *pairs]))

    def _answer(self, name: str, action: Message) -> None:
        fake = self.fake
        if name == "login":
            if action.get("Username") == fake.user and action.get("Secret") == fake.secret:
                self.logged_in = True
                fake.logins += 1
                self.reply(action, "Success", ("Message", "Authentication accepted"))
                self.write(encode([("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", "12"),
                                   ("LastReload", "12"), ("Status", "Fully Booted")]))  # fmt: skip
            else:
                self.reply(action, "Error", ("Message", "Authentication failed"))
                self.transport.close()
        elif not self.logged_in:
            self.reply(action, "Error", ("Message", "Permission denied"))
        elif name == "ping":
            if self.answer_pings:
                self.reply(action, "Success", ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}"))
        elif name == "coreshowchannels":
            self.write(fake.core_show_channels(action.get("ActionID", "")))
        elif name == "command":
            self._command(action)
        elif name == "hangup":
            self._hangup(action)
        elif name == "originate":
            self._originate(action)
        elif name == "reload":
            if self.fake.reload_error:
                self.reply(action, "Error", ("Message", self.fake.reload_error))
                return
            self.fake.reloads.append(action.get("Module", ""))
            self.reply(action, "Success", ("Message", "Module Reloaded."))
        elif name in fake.custom:
            fake.custom[name](self, action)
        elif name == "logoff":
            self.reply(action, "Goodbye", ("Message", "Thanks for all the fish."))
            self.transport.close()
        else:
            unknown = f"Invalid/unknown command: {action.get('Action', '')}."
            self.reply(action, "Error", ("Message", f"{unknown} Use Action: ListCommands to show available commands."))

    def _command(self, action: Message) -> None:
        if self.fake.legacy_command:
            head = f"Response: Follows\r\nPrivilege: Command\r\nActionID: {action.get('ActionID', '')}\r\n"
            self.write((head + "\n".join(self.fake.command_output) + "\n--END COMMAND--\r\n\r\n").encode())
            return
        lines = [("Output", line) for line in self.fake.command_output]
        self.reply(action, "Success", ("Message", "Command output follows"), *lines)

    def _hangup(self, action: Message) -> None:
        fake = self.fake
        uid = next((u for u, c in fake.channels.items() if c["Channel"] == action.get("Channel")), None)
        if uid is None:
            self.reply(action, "Error", ("Message", "No such channel"))
            return
        self.reply(action, "Success", ("Message", "Channel Hungup"))
        channel = fake.channels[uid]
        fake.emit(hangup(uid, channel["Channel"], linkedid=channel["Linkedid"]))

    def _originate(self, action: Message) -> None:
        """manager.c's action_originate with Async: queued at once; the verdict on the first
        channel (answered, busy, ...) later, as an OriginateResponse event with the ActionID."""
        fake = self.fake
        fake.originates += 1
        if fake.originate_error:
            self.reply(action, "Error", ("Message", fake.originate_error))
            return
        self.reply(action, "Success", ("Message", "Originate successfully queued"))
        response, reason = fake.originate_result
        event = encode([
            ("Event", "OriginateResponse"), ("Privilege", "call,all"), ("ActionID", action.get("ActionID", "")),
            ("Response", response), ("Channel", action.get("Channel", "")), ("Context", action.get("Context", "")),
            ("Exten", action.get("Exten", "")), ("Application", ""), ("Data", ""), ("Reason", reason),
            ("Uniqueid", "1795417000.10" if response == "Success" else "<null>"),
            ("CallerIDNum", action.get("CallerID", "") or "<unknown>"), ("CallerIDName", "<unknown>"),
        ])  # fmt: skip
        if fake.originate_delay_s:
            fake.later(fake.originate_delay_s, lambda: self.write(event))
        else:
            self.write(event)
