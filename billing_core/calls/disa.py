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

An empty `auth` (the caller entered nothing, or the dialplan's Read() found no prompt
and returned at once) is no login attempt: unless a trusted caller ID admits the caller,
it is declined E_MISSING_ARGUMENT and counts nothing.

Lock-out (billing_core.directory.lockouts), with `disa_max_failures` failures within
`disa_lockout_s` locking for `disa_lockout_s` (0 failures = no lock-out):
- per caller ID: every declined attempt counts against it. Callers without a usable
  caller ID (empty, "anonymous", "unknown", "restricted" …) have no such counter: one
  shared by all of them let two silent calls lock out every anonymous caller.
- per extension: a failed attempt counts against every extension with a PIN that `auth`
  starts with (each of them had a PIN guessed), so changing caller IDs does not buy more
  guesses. A locked extension is not authorized even with its right PIN.
While a counter is locked nothing more is counted on it, and an attempt it blocks is
declined E_USER_LOCKED. A success clears the caller's and the extension's counters.
The verdict is computed first and only given once the counter rows are locked and
updated, so parallel guesses cannot exceed a limit.

Neither `auth` nor a PIN is ever logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select

from billing_core.directory import lockouts
from billing_core.directory.ownership import key_owner_serves
from billing_core.directory.tables import sip_extensions, users
from billing_core.errors import ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.numbers.dids import Generations

log = structlog.get_logger(__name__)

# What Asterisk and carriers put in CALLERID(num) when the number is withheld.
ANONYMOUS_CALLER_IDS = frozenset({"", "anonymous", "unknown", "restricted", "private", "withheld", "unavailable"})
ACTIVE_STATES = (1, 2)
MAX_EXTENSION_LEN = 32  # sip_extensions.sip_extension is String(32)
MAX_AUTH_LEN = 64  # longer strings are not tried at all


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


def caller_counter(callerid: str) -> str | None:
    """The caller ID's counter key, or None for a caller without a usable caller ID."""
    if callerid.strip().lower() in ANONYMOUS_CALLER_IDS:
        return None
    return lockouts.counter_key("cli", callerid)


def extension_counter(extension: str) -> str:
    return lockouts.counter_key("ext", extension)


async def authorize(
    services: LedgerContext, gens: Generations, *, key_owner: str, callerid: str, auth: str
) -> Verdict:
    caller = caller_counter(callerid)
    if caller is not None and await lockouts.locked(services.db, [caller]):
        verdict = Verdict(error=ErrorCode.E_USER_LOCKED, counted=False)  # cheap path for floods
    else:
        candidates, named = await _candidates(services, callerid, auth)
        if not candidates and not auth:
            verdict = Verdict(error=ErrorCode.E_MISSING_ARGUMENT, counted=False)
        else:
            verdict = await _decide(services, gens, key_owner, caller, candidates, named)
    if verdict.allowed:
        log.info("disa.allowed", extension=verdict.extension, callerid=callerid)
    else:
        log.warning("disa.declined", callerid=callerid, error=verdict.error, counted=verdict.counted)
    return verdict


async def _decide(
    services: LedgerContext,
    gens: Generations,
    key_owner: str,
    caller: str | None,
    candidates: list[Candidate],
    named: list[str],
) -> Verdict:
    """Choose among the candidates whose extension is not locked, then settle the counters."""
    db = services.db
    settings = services.settings
    limit = lockouts.Limit(settings.disa_max_failures, settings.disa_lockout_s)
    locked = await lockouts.locked(db, [extension_counter(c.extension) for c in candidates])
    usable = [c for c in candidates if extension_counter(c.extension) not in locked]
    verdict = await _choose(services, gens, key_owner, usable)
    if verdict.allowed:
        assert verdict.extension is not None
        keys = [extension_counter(verdict.extension), *([caller] if caller else [])]
        if not await lockouts.record_success(db, keys):  # locked by a parallel attempt
            return Verdict(error=ErrorCode.E_USER_LOCKED, counted=False)
        return verdict
    extensions = [extension_counter(extension) for extension in named]
    counters = [(key, limit) for key in [*([caller] if caller else []), *extensions]]
    was_locked, _ = await lockouts.record_failure(db, counters)
    counted = len(was_locked) < len(counters)
    if len(usable) < len(candidates) or (extensions and was_locked.issuperset(extensions)):
        # the right PIN of a locked extension, or only locked extensions tried: say so
        return Verdict(error=ErrorCode.E_USER_LOCKED, counted=counted)
    return Verdict(error=verdict.error, counted=counted)


async def _candidates(services: LedgerContext, callerid: str, auth: str) -> tuple[list[Candidate], list[str]]:
    """Trusted-caller-ID extensions first, then extensions whose PIN `auth` carries; and
    every extension with a PIN that `auth` starts with (whose PIN this attempt tried)."""
    columns = (
        sip_extensions.c.sip_extension,
        sip_extensions.c.disa_pin_enc,
        users.c.username,
        users.c.active,
    )
    joined = (
        select(*columns)
        .join(users, users.c.id == sip_extensions.c.user_id)
        .where(sip_extensions.c.deleted_at.is_(None), users.c.deleted_at.is_(None))  # deleted: not found
    )
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
    return found, sorted({row.sip_extension for row in with_pin})


def _prefixes(auth: str) -> list[str]:
    """Every split of `auth` into a non-empty extension and a non-empty PIN."""
    if len(auth) > MAX_AUTH_LEN:
        return []
    return [auth[:cut] for cut in range(1, min(len(auth) - 1, MAX_EXTENSION_LEN) + 1)]


def _pin_matches(services: LedgerContext, encrypted: str | None, given: str) -> bool:
    stored = services.box.decrypt(encrypted)
    if not stored or not given:
        return False
    return hmac.compare_digest(stored.encode(), given.encode())


async def _choose(
    services: LedgerContext, gens: Generations, key_owner: str, candidates: list[Candidate]
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
