"""asteriskRequest: a bounded allow-list of AMI actions, never an arbitrary command.

The spec's arguments are `destination` ("query destination"), `process` ("generally, the
method name") and `params`. Here a request is one entry of ALLOWED, named by
(destination, process), compared without case:

- `destination=ami`, `process=<an AMI action of the list>`: that action, read-only
  (channels, peers and endpoints, queues, status), with only the parameters the entry
  names (`params=Endpoint=1001`, several joined by `,`), each value one plain word;
- `destination=sipreload&process=sipreload` (the spec's example, answered `ok`): the AMI
  `Reload` action of the PJSIP module.

Nothing else is sent: no `Command` (a CLI line can do anything the Asterisk console can),
no `Originate`, `Redirect`, `Hangup`, `Setvar`, `UpdateConfig`, … Anything else is
E_UNDEFINED_INSTRUCTION ("Method can't be executed"); a parameter the entry does not name,
or a value that is not one plain word, E_INVALID_ARGUMENT. The answer is Asterisk's,
as `Key: Value` lines (a list: one block per message, blank line between), without
ActionID; `ok` for a reload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billing_core.asterisk.service import AmiService
from billing_core.errors import ApiError, ErrorCode

PJSIP_MODULE = "res_pjsip.so"
_VALUE = re.compile(r"[A-Za-z0-9_.@+:/-]{1,128}")
_HIDDEN = frozenset({"actionid"})


@dataclass(frozen=True, slots=True)
class Allowed:
    action: str
    params: tuple[str, ...] = ()  # the AMI headers a caller may give (params=Key=Value,...)
    fixed: tuple[tuple[str, str], ...] = ()  # headers always sent
    ok: bool = False  # answered "ok" (an action whose answer is only Success)


_AMI: dict[str, Allowed] = {
    "ping": Allowed("Ping"),
    "corestatus": Allowed("CoreStatus"),
    "coresettings": Allowed("CoreSettings"),
    "coreshowchannels": Allowed("CoreShowChannels"),
    "status": Allowed("Status", ("Channel",)),
    "pjsipshowendpoints": Allowed("PJSIPShowEndpoints"),
    "pjsipshowendpoint": Allowed("PJSIPShowEndpoint", ("Endpoint",)),
    "pjsipshowcontacts": Allowed("PJSIPShowContacts"),
    "pjsipshowregistrationsoutbound": Allowed("PJSIPShowRegistrationsOutbound"),
    "sippeers": Allowed("SIPpeers"),
    "sipshowpeer": Allowed("SIPshowpeer", ("Peer",)),
    "queuestatus": Allowed("QueueStatus", ("Queue", "Member")),
    "queuesummary": Allowed("QueueSummary", ("Queue",)),
}
ALLOWED: dict[tuple[str, str], Allowed] = {("ami", name): entry for name, entry in _AMI.items()}
ALLOWED[("sipreload", "sipreload")] = Allowed("Reload", fixed=(("Module", PJSIP_MODULE),), ok=True)


def allowed(destination: str, process: str) -> Allowed:
    entry = ALLOWED.get((destination.strip().lower(), process.strip().lower()))
    if entry is None:
        raise ApiError(
            ErrorCode.E_UNDEFINED_INSTRUCTION,
            "not an allowed Asterisk request (destination=ami with a read-only AMI action, or sipreload)",
        )
    return entry


def parse_params(entry: Allowed, params: str) -> dict[str, str]:
    """`Key=Value,Key=Value` with keys of the entry (without case) and plain values."""
    fields: dict[str, str] = {}
    names = {p.lower(): p for p in entry.params}
    for part in (p.strip() for p in params.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        name = names.get(key.strip().lower())
        if not sep or name is None:
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{entry.action} takes no parameter {key.strip()[:32]!r}")
        if not _VALUE.fullmatch(value.strip()):
            raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{name} must be one plain word (up to 128 characters)")
        fields[name] = value.strip()
    return fields


def render(answer: Any) -> str:
    messages = answer if isinstance(answer, list) else [answer]
    blocks = []
    for message in messages:
        lines = []
        for key, value in _items(message):
            if key.lower() in _HIDDEN or key == "content":
                continue
            for one in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {one}")
        # panoramisk keeps a message's body (`Response: Follows`) under "content", empty for
        # every other answer: the body's own lines, never a "content:" header Asterisk did not send.
        body = str(message.get("content", "") or "").strip("\n")
        blocks.append("\n".join(lines + ([body] if body else [])))
    return "\n\n".join(blocks)


def _items(message: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return list(message.items())


async def asterisk_request(ami: AmiService, server: str, destination: str, process: str, params: str) -> str:
    entry = allowed(destination, process)
    fields = dict(entry.fixed) | parse_params(entry, params)
    answer = await ami.action(server, entry.action, fields)
    return "ok" if entry.ok else render(answer)
