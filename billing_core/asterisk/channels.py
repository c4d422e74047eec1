"""The live channels of one Asterisk, kept from its AMI events.

Built from `Newchannel` (a channel exists), `Hangup` (it is gone, with its Q.850 cause),
`DialEnd` (what a dial attempt of a channel ended with, and which channel it reached),
`VarSet` of the dialplan's own variables (`CALLGATE_*`, `CG_*`: dialplan/extensions.conf),
`Cdr` (Asterisk's record, joined to the channel it is for, live or ended; one that comes
before its channel's Newchannel waits for it: in the recorded session, a short-lived
Local channel's Cdr arrived 0.65 ms before its Newchannel), and the state
and name that every channel event carries (`Newstate`, `Rename`, …). After every (re)connect
the set of channels is replaced by `CoreShowChannels`, at the point of the stream where
its list completes; channels it no longer lists ended while the connection was away
(`vanished`). What is known of a channel that is still there (when it started, callgate's
variables) is kept.

How a channel joins its callgate call: a hold is keyed by call_uid = the `agi_uniqueid` of
the channel that asked callPrepare (billing_core.calls.control), i.e. that channel's
Asterisk `Uniqueid`. Every channel of one call shares that channel's `Linkedid`. So the
holds of a call are those of the channels of its linkedid on which callPrepare was answered
`Allowed` (their `VarSet CALLGATE_RESULT`: one for a call, two for a callback, whose legs
share the originated channel's linkedid and also carry `CG_CALLBACK`); after a reconnect, before any such event, the
candidates are the uniqueids of the linkedid's channels (AmiService.live_calls joins them to
the holds in the database).

Pure state, no I/O: fed by the connection, read by the service. Times are Asterisk's
`Timestamp` (epoch seconds; manager.conf timestampevents=yes) when the event has one,
else this host's clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from billing_core.asterisk.wire import field as header

STATE_UP = 6  # ChannelState of an answered channel (ChannelStateDesc "Up")
# The dialplan's variables worth keeping (fastagi/contract.py, dialplan/extensions.conf).
VARIABLE_PREFIXES = ("CALLGATE_", "CG_")
RESULT_VARIABLE = "CALLGATE_RESULT"  # fastagi.contract.VAR_RESULT
RESULT_ALLOWED = "Allowed"  # fastagi.contract.RESULT_ALLOWED
CALLBACK_VARIABLE = "CG_CALLBACK"  # a createCallback's id, on both legs (dialplan [callgate-callback])
CDR_FIELDS = (
    "Source", "Destination", "DestinationChannel", "LastApplication", "StartTime", "AnswerTime", "EndTime",
    "Duration", "BillableSeconds", "Disposition", "UniqueID",
)  # fmt: skip
ENDED_KEPT = 4096  # ended channels remembered, for late Cdr events and reconciliation


@dataclass(slots=True)
class Channel:
    uniqueid: str
    linkedid: str
    name: str
    state: int
    created_at: float
    exten: str = ""
    caller: str = ""
    accountcode: str = ""
    answered_at: float | None = None
    dial_status: str = ""  # the last DialEnd of this channel as the dialling side
    dialed: str = ""  # the uniqueid that dial reached
    variables: dict[str, str] = field(default_factory=dict)
    cdrs: list[dict[str, str]] = field(default_factory=list)
    ended_at: float | None = None
    cause: str = ""  # Hangup's Cause; empty for a channel that vanished while disconnected
    vanished: bool = False

    @property
    def held(self) -> bool:
        """callPrepare answered Allowed on this channel: its uniqueid keys holds."""
        return self.variables.get(RESULT_VARIABLE) == RESULT_ALLOWED


@dataclass(frozen=True, slots=True)
class Call:
    """The live channels of one linkedid."""

    linkedid: str
    channels: tuple[Channel, ...]
    held: tuple[str, ...] = ()  # the held channels' uniqueids, if events said so (a callback has two)

    @property
    def call_uid(self) -> str | None:
        return self.held[0] if self.held else None

    @property
    def since(self) -> float:
        return min(c.created_at for c in self.channels)

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.held if self.held else tuple(c.uniqueid for c in self.channels)

    @property
    def callback(self) -> str | None:
        """The createCallback id its channels carry (`CG_CALLBACK`), if it is a callback."""
        return next((c.variables[CALLBACK_VARIABLE] for c in self.channels if c.variables.get(CALLBACK_VARIABLE)), None)


class ChannelRegistry:
    def __init__(self, server: str, *, clock: Callable[[], float] = time.time, ended_kept: int = ENDED_KEPT) -> None:
        self.server = server
        self.synced = False  # False until the first CoreShowChannels, and while disconnected
        self.rebuilds = 0
        self.vanished_total = 0
        self._clock = clock
        self._ended_kept = ended_kept
        self._live: dict[str, Channel] = {}
        self._linked: dict[str, set[str]] = {}
        self._ended: OrderedDict[str, Channel] = OrderedDict()
        self._early_cdrs: OrderedDict[str, list[dict[str, str]]] = OrderedDict()
        self._apply: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "Newchannel": self._newchannel,
            "Hangup": self._hangup,
            "DialEnd": self._dial_end,
            "VarSet": self._var_set,
            "Cdr": self._cdr,
            "Rename": self._rename,
        }

    # --- reading -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._live)

    def channels(self) -> list[Channel]:
        return sorted(self._live.values(), key=lambda c: (c.created_at, c.uniqueid))

    def channel(self, uniqueid: str) -> Channel | None:
        return self._live.get(uniqueid)

    def ended(self, uniqueid: str) -> Channel | None:
        return self._ended.get(uniqueid)

    def call_uid(self, channel: Channel) -> str | None:
        if channel.held:
            return channel.uniqueid
        for uid in self._linked.get(channel.linkedid, ()):
            other = self._live.get(uid)
            if other is not None and other.held:
                return other.uniqueid
        return None

    def calls(self) -> list[Call]:
        out = []
        for linkedid, uids in self._linked.items():
            members = tuple(sorted((self._live[u] for u in uids), key=lambda c: (c.created_at, c.uniqueid)))
            out.append(Call(linkedid, members, tuple(c.uniqueid for c in members if c.held)))
        return sorted(out, key=lambda call: (call.since, call.linkedid))

    # --- events ------------------------------------------------------------------------

    def apply(self, event: str, message: Mapping[str, Any]) -> None:
        handler = self._apply.get(event)
        if handler is not None:
            handler(message)
        elif "Uniqueid" in message:
            self._touch(message)

    def mark_unsynced(self) -> None:
        self.synced = False

    def replace(self, answer: Any) -> list[Channel]:
        """The CoreShowChannels answer (panoramisk's list: response, CoreShowChannel
        events, CoreShowChannelsComplete) becomes the set of live channels; returns the
        channels that were live here and are no longer listed."""
        if not isinstance(answer, list):
            return []  # refused (a single `Response: Error`): the connection reports it
        now = self._clock()
        old = self._live
        self._live, self._linked = {}, {}
        for item in answer:
            if header(item, "Event") != "CoreShowChannel":
                continue
            uid = header(item, "Uniqueid")
            known = old.pop(uid, None)
            channel = known or Channel(
                uid, header(item, "Linkedid"), header(item, "Channel"), 0, now - _seconds(header(item, "Duration")),
                exten=header(item, "Exten"), caller=header(item, "CallerIDNum"),
                accountcode=header(item, "AccountCode"),
            )  # fmt: skip
            channel.linkedid = header(item, "Linkedid") or channel.linkedid
            channel.name = header(item, "Channel") or channel.name
            self._set_state(channel, header(item, "ChannelState"), None)
            self._add(channel)
        vanished = list(old.values())
        for channel in vanished:
            channel.vanished, channel.ended_at = True, now
            self._remember(channel)
        self.vanished_total += len(vanished)
        self.synced = True
        self.rebuilds += 1
        return vanished

    def _newchannel(self, m: Mapping[str, Any]) -> None:
        uid = header(m, "Uniqueid")
        if uid in self._live:
            self._touch(m)
            return
        at = self._time(m)
        channel = Channel(
            uid, header(m, "Linkedid") or uid, header(m, "Channel"), 0, at,
            exten=header(m, "Exten"), caller=header(m, "CallerIDNum"), accountcode=header(m, "AccountCode"),
        )  # fmt: skip
        self._set_state(channel, header(m, "ChannelState"), at)
        channel.cdrs.extend(self._early_cdrs.pop(uid, ()))
        self._add(channel)

    def _hangup(self, m: Mapping[str, Any]) -> None:
        channel = self._live.pop(header(m, "Uniqueid"), None)
        if channel is None:
            return
        self._unlink(channel)
        channel.ended_at = self._time(m)
        channel.cause = header(m, "Cause")
        self._remember(channel)

    def _dial_end(self, m: Mapping[str, Any]) -> None:
        caller = self._live.get(header(m, "Uniqueid"))
        if caller is not None:  # an Originate's DialEnd has no calling channel
            caller.dial_status = header(m, "DialStatus")
            caller.dialed = header(m, "DestUniqueid")
            self._touch(m)

    def _var_set(self, m: Mapping[str, Any]) -> None:
        name = header(m, "Variable")
        if not name.startswith(VARIABLE_PREFIXES):
            return
        channel = self._live.get(header(m, "Uniqueid"))
        if channel is not None:
            channel.variables[name] = header(m, "Value")

    def _cdr(self, m: Mapping[str, Any]) -> None:
        uid = header(m, "UniqueID")
        row = {name: header(m, name) for name in CDR_FIELDS}
        channel = self._live.get(uid) or self._ended.get(uid)
        if channel is not None:
            channel.cdrs.append(row)
            return
        self._early_cdrs.setdefault(uid, []).append(row)
        while len(self._early_cdrs) > self._ended_kept:
            self._early_cdrs.popitem(last=False)

    def _rename(self, m: Mapping[str, Any]) -> None:
        channel = self._live.get(header(m, "Uniqueid"))
        if channel is not None:
            channel.name = header(m, "Newname") or channel.name

    def _touch(self, m: Mapping[str, Any]) -> None:
        channel = self._live.get(header(m, "Uniqueid"))
        if channel is None:
            return
        name = header(m, "Channel")
        if name:
            channel.name = name
        state = m.get("ChannelState")
        if state is not None:
            self._set_state(channel, str(state), self._time(m))

    @staticmethod
    def _set_state(channel: Channel, state: str, at: float | None) -> None:
        """`at` None: the moment is unknown (a channel found Up by CoreShowChannels)."""
        if not state.isdigit():
            return
        channel.state = int(state)
        if channel.state == STATE_UP and channel.answered_at is None and at is not None:
            channel.answered_at = at

    def _add(self, channel: Channel) -> None:
        self._live[channel.uniqueid] = channel
        self._linked.setdefault(channel.linkedid, set()).add(channel.uniqueid)

    def _unlink(self, channel: Channel) -> None:
        group = self._linked.get(channel.linkedid)
        if group is not None:
            group.discard(channel.uniqueid)
            if not group:
                del self._linked[channel.linkedid]

    def _remember(self, channel: Channel) -> None:
        self._ended[channel.uniqueid] = channel
        self._ended.move_to_end(channel.uniqueid)
        while len(self._ended) > self._ended_kept:
            self._ended.popitem(last=False)

    def _time(self, m: Mapping[str, Any]) -> float:
        try:
            return float(header(m, "Timestamp"))
        except ValueError:
            return self._clock()


def _seconds(duration: str) -> float:
    """CoreShowChannel's Duration, `HH:MM:SS` (hours may pass 24)."""
    total = 0
    for part in duration.split(":"):
        if not part.isdigit():
            return 0.0
        total = total * 60 + int(part)
    return float(total)
