"""closeChannels: hang up every live channel of a user, on every Asterisk server.

A user's calls are found two ways, because either alone misses some: a call whose hold
belongs to the user (callPrepare answered it Allowed), and a call with a channel of one of
the user's SIP accounts (`PJSIP/10001-0000002a`: ringing in, or not yet through
callPrepare). Each of the call's channels gets an AMI `Hangup`; the answer is true once
the channel registries (fed by Hangup events) hold none of them, within `wait_s`.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from billing_core.asterisk.errors import AsteriskRefused
from billing_core.asterisk.service import AmiService, LiveCall

log = structlog.get_logger(__name__)

POLL_S = 0.05


def peer_of(channel_name: str) -> str:
    """`PJSIP/10001-0000002a` → `10001`; `Local/74951234567@ctx-00000001;2` → `74951234567`."""
    rest = channel_name.split("/", 1)[-1]
    rest = rest.split("@", 1)[0]
    return rest.rsplit("-", 1)[0] if "-" in rest else rest


def users_calls(calls: list[LiveCall], user_id: int, extensions: set[str]) -> list[LiveCall]:
    return [
        call for call in calls
        if any(h.user_id == user_id for h in call.holds) or any(peer_of(c.name) in extensions for c in call.channels)
    ]  # fmt: skip


async def close_channels(ami: AmiService, user_id: int, extensions: set[str], *, wait_s: float) -> bool:
    """Hang up the user's calls everywhere; True when all their channels are gone.
    AsteriskUnavailable (E_ASTERISK_QUERY_ERROR) when a server cannot be seen or asked."""
    ami.require_all_up()
    targets = [(call.server, channel.name, channel.uniqueid)
               for call in users_calls(await ami.live_calls(), user_id, extensions)
               for channel in call.channels]  # fmt: skip
    for server, name, _ in targets:
        try:
            await ami.action(server, "Hangup", {"Channel": name})
        except AsteriskRefused:  # "No such channel": it ended meanwhile
            pass
    log.info("asterisk.close_channels", user_id=user_id, channels=len(targets))
    deadline = time.monotonic() + wait_s
    while True:
        left = [uid for server, _, uid in targets if ami.registry(server).channel(uid) is not None]
        if not left:
            return True
        if time.monotonic() >= deadline:
            log.warning("asterisk.channels_still_up", user_id=user_id, channels=len(left))
            return False
        await asyncio.sleep(POLL_S)
