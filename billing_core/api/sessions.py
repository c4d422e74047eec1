"""Front-door sessions as the dispatcher uses them: opened by a password login through a
door that keeps sessions (JeraSoft VCS, BILLmanager), resumed by id, ended by logout or
after `settings.session_idle_s` without use (billing_core.cache.sessions keeps them).

A session names its user and the key it was opened under: it is accepted only with that
key, so the key's IP masks, allowed methods and enabled flag still apply to every call,
and the user is read again each time (a locked user's session stops working).
"""

from __future__ import annotations

import json

import structlog

from billing_core.cache.sessions import new_session_id
from billing_core.container import Services
from billing_core.errors import ApiError, ErrorCode
from billing_core.records import KeyRecord, UserRecord

log = structlog.get_logger(__name__)


def _expired() -> ApiError:
    return ApiError(ErrorCode.E_AUTH_FAILED, "the session is unknown or has expired: log in again")


async def open_session(services: Services, key: KeyRecord, user: UserRecord) -> str | None:
    """A new session for `user` under `key`; None when the store cannot keep one (the call
    itself still runs: its password was right)."""
    session_id = new_session_id()
    record = json.dumps({"user": user.username, "key": key.id}).encode()
    if not await services.sessions.put(session_id, record, services.settings.session_idle_s):
        return None
    log.info("session.opened", user=user.username, key=key.id)
    return session_id


async def resume(services: Services, gens: dict[str, int] | None, key: KeyRecord, session_id: str) -> UserRecord:
    """The session's user, its idle time restarted; E_AUTH_FAILED when it is not valid here."""
    if not 0 < len(session_id) <= 128:
        raise _expired()
    raw = await services.sessions.touch(session_id, services.settings.session_idle_s)
    if raw is None:
        raise _expired()
    try:
        record = json.loads(raw)
        username, key_id = str(record["user"]), int(record["key"])
    except (ValueError, KeyError, TypeError):
        raise _expired() from None
    if key_id != key.id:
        raise _expired()
    user = await services.profiles.user_by(gens, "username", username)
    if user is None:
        await services.sessions.end(session_id)
        raise _expired()
    return user


async def end_session(services: Services, session_id: str) -> bool:
    """Log out: True when the session existed."""
    if not 0 < len(session_id) <= 128:
        return False
    return await services.sessions.end(session_id)
