"""DISA login (authorizeCall): who may place calls from a DISA number.

A caller is authorized, in this order, by
1. a trusted caller ID: an extension whose `disa_trusted_cli` is the caller's number
   (whatever `auth` says), or
2. `auth` = SIP extension + PIN: every split point whose prefix is an extension with a
   PIN is tried (so 100+PIN and 1000+PIN coexist), longest extension first; PINs are
   decrypted and compared in constant time.
The extension found must belong to the Asterisk key's owner (the dispatcher's rule for
`login=`), else E_DOES_NOT_BELONG_TO_YOU, and its user must be active (1 or 2), else
E_USER_LOCKED; an extension that fails these does not hide another candidate that passes.

Lock-out: every declined attempt counts against the caller ID (an empty one counts as
"anonymous"). `disa_max_failures` failures within `disa_lockout_s` lock the caller ID for
`disa_lockout_s` (0 failures = no lock-out); while locked every attempt, even a correct
one, is declined E_USER_LOCKED without being counted. A success clears the counter.
The verdict is computed first and only given once the counter row is locked and
updated, so parallel guesses cannot exceed the limit.

Neither `auth` nor a PIN is ever logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.db.tables import disa_failures, sip_extensions, users
from billing_core.errors import ErrorCode
from billing_core.services.clock import as_utc, utcnow
from billing_core.services.container import Services
from billing_core.services.dids import Generations
from billing_core.services.ownership import key_owner_serves

log = structlog.get_logger(__name__)

ANONYMOUS = "anonymous"  # the counter of callers without a caller ID
ACTIVE_STATES = (1, 2)
MAX_EXTENSION_LEN = 32  # sip_extensions.sip_extension is String(32)
MAX_AUTH_LEN = 64  # longer strings are not tried at all
COUNTER_KEY_LEN = 64  # disa_failures.callerid is String(64)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An extension the caller proved (by caller ID or PIN), with its user's state."""

    extension: str
    username: str
    active: int
    via: str  # "cli" or "pin"


@dataclass(frozen=True, slots=True)
class Verdict:
    extension: str | None = None  # set when allowed
    error: ErrorCode | None = None  # set when declined
    counted: bool = True  # does this decline count towards the lock-out

    @property
    def allowed(self) -> bool:
        return self.extension is not None


def counter_key(callerid: str) -> str:
    return callerid[:COUNTER_KEY_LEN] or ANONYMOUS


async def authorize(
    services: Services, gens: Generations, *, key_owner: str, callerid: str, auth: str
) -> Verdict:
    key = counter_key(callerid)
    if await _locked(services, key):
        verdict = Verdict(error=ErrorCode.E_USER_LOCKED, counted=False)  # cheap path for floods
    else:
        candidates = await _candidates(services, callerid, auth)
        verdict = await _choose(services, gens, key_owner, candidates)
        verdict = await _settle(services, key, verdict)
    if verdict.allowed:
        log.info("disa.allowed", extension=verdict.extension, callerid=callerid)
    else:
        log.warning("disa.declined", callerid=callerid, error=verdict.error, counted=verdict.counted)
    return verdict


async def _candidates(services: Services, callerid: str, auth: str) -> list[Candidate]:
    """Trusted-caller-ID extensions first, then extensions whose PIN `auth` carries."""
    columns = (
        sip_extensions.c.sip_extension,
        sip_extensions.c.disa_pin_enc,
        users.c.username,
        users.c.active,
    )
    joined = select(*columns).join(users, users.c.id == sip_extensions.c.user_id)
    prefixes = _prefixes(auth)
    async with services.db.begin() as conn:
        trusted: Sequence[Any] = ()
        if callerid:
            trusted = (
                await conn.execute(
                    joined.where(sip_extensions.c.disa_trusted_cli == callerid).order_by(sip_extensions.c.id)
                )
            ).all()
        with_pin: Sequence[Any] = ()
        if prefixes:
            with_pin = (
                await conn.execute(
                    joined.where(
                        sip_extensions.c.sip_extension.in_(prefixes), sip_extensions.c.disa_pin_enc.is_not(None)
                    )
                )
            ).all()
    found = [Candidate(row.sip_extension, row.username, row.active, "cli") for row in trusted]
    for row in sorted(with_pin, key=lambda r: len(r.sip_extension), reverse=True):
        if _pin_matches(services, row.disa_pin_enc, auth[len(row.sip_extension) :]):
            found.append(Candidate(row.sip_extension, row.username, row.active, "pin"))
    return found


def _prefixes(auth: str) -> list[str]:
    """Every split of `auth` into a non-empty extension and a non-empty PIN."""
    if len(auth) > MAX_AUTH_LEN:
        return []
    return [auth[:cut] for cut in range(1, min(len(auth) - 1, MAX_EXTENSION_LEN) + 1)]


def _pin_matches(services: Services, encrypted: str | None, given: str) -> bool:
    stored = services.box.decrypt(encrypted)
    if not stored or not given:
        return False
    return hmac.compare_digest(stored.encode(), given.encode())


async def _choose(
    services: Services, gens: Generations, key_owner: str, candidates: list[Candidate]
) -> Verdict:
    """The first usable candidate wins; otherwise the first one's reason is given."""
    reasons: list[ErrorCode] = []
    for candidate in candidates:
        if not await key_owner_serves(services.profiles, gens, key_owner, candidate.username):
            reasons.append(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
        elif candidate.active not in ACTIVE_STATES:
            reasons.append(ErrorCode.E_USER_LOCKED)
        else:
            return Verdict(extension=candidate.extension)
    return Verdict(error=reasons[0] if reasons else ErrorCode.E_AUTH_FAILED)


async def _locked(services: Services, key: str) -> bool:
    async with services.db.begin() as conn:
        row = (
            await conn.execute(select(disa_failures.c.locked_until).where(disa_failures.c.callerid == key))
        ).first()
    return row is not None and _is_locked(row.locked_until, utcnow())


def _is_locked(locked_until: datetime | None, now: datetime) -> bool:
    until = as_utc(locked_until)
    return until is not None and until > now


async def _settle(services: Services, key: str, verdict: Verdict) -> Verdict:
    """Apply the verdict to the caller ID's counter under a row lock; a lock set meanwhile
    (by a parallel attempt) turns even a success into a decline."""
    settings = services.settings
    now = utcnow()
    async with services.db.begin() as conn:
        if verdict.allowed:
            row = await _counter_row(conn, key)
            if row is not None and _is_locked(row.locked_until, now):
                return Verdict(error=ErrorCode.E_USER_LOCKED, counted=False)
            await conn.execute(delete(disa_failures).where(disa_failures.c.callerid == key))
            return verdict
        await _ensure_counter(conn, key, now)
        row = await _counter_row(conn, key)
        assert row is not None  # just ensured, and locked
        if _is_locked(row.locked_until, now):
            return Verdict(error=ErrorCode.E_USER_LOCKED, counted=False)
        window = timedelta(seconds=settings.disa_lockout_s)
        recent = (as_utc(row.updated_at) or now) > now - window
        failures = (row.failures if recent else 0) + 1
        locked_until = None
        if 0 < settings.disa_max_failures <= failures:
            locked_until = now + window
            failures = 0  # after the lock-out the caller starts afresh
            log.warning("disa.locked_out", callerid=key, until=locked_until.isoformat())
        await conn.execute(
            update(disa_failures)
            .where(disa_failures.c.callerid == key)
            .values(failures=failures, locked_until=locked_until, updated_at=now)
        )
    return verdict


async def _counter_row(conn: AsyncConnection, key: str) -> Any:
    query = select(disa_failures).where(disa_failures.c.callerid == key).with_for_update()
    return (await conn.execute(query)).first()


async def _ensure_counter(conn: AsyncConnection, key: str, now: datetime) -> None:
    """Create the counter row if missing, race-free (parallel first failures)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(disa_failures)
        .values(callerid=key, failures=0, locked_until=None, updated_at=now)
        .on_conflict_do_nothing(index_elements=["callerid"])
    )
    await conn.execute(statement)
