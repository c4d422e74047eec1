"""Lock-out of password logins (dynamic client keys), as the spec locks out bad keys.

Without it a client key could guess passwords forever (60 wrong ones in a row, 30 in
1.1 s, were all judged). Two counters (billing_core.directory.lockouts) see every wrong
password, unknown logins included (so a lock-out does not tell which logins exist):
- the login (`login:<auth_by>:<login>`): `login_max_failures` within `login_lockout_s`
  lock it for `login_lockout_s`; while locked, every attempt for it, the right password
  too, is answered E_USER_LOCKED without its password being looked at. A success clears it.
- the source address (`ip:<address>`): `login_ip_max_failures` (any logins) ban the
  address the way a bad key does (billing_core.directory.bans: CALLGATE_BAN_SECONDS, and
  never a whitelisted address, so a portal that relays its users' logins from one
  address should be on CALLGATE_BAN_WHITELIST). A success does not clear it: a guesser
  with one account of its own must not reset it.
"""

from __future__ import annotations

from billing_core.directory import lockouts
from billing_core.directory.context import DirectoryContext
from billing_core.directory.profiles import Generations
from billing_core.errors import ApiError, ErrorCode


def login_counter(auth_by: str, login: str) -> str:
    return lockouts.counter_key("login", f"{auth_by}:{login}")


def address_counter(peer_ip: str) -> str:
    return lockouts.counter_key("ip", peer_ip)


def _locked() -> ApiError:
    return ApiError(ErrorCode.E_USER_LOCKED, "too many wrong passwords: this login is locked for a while")


async def refuse_if_locked(services: DirectoryContext, auth_by: str, login: str) -> None:
    if await lockouts.locked(services.db, [login_counter(auth_by, login)]):
        raise _locked()


async def failed(services: DirectoryContext, gens: Generations, auth_by: str, login: str, peer_ip: str) -> None:
    settings = services.settings
    login_limit = lockouts.Limit(settings.login_max_failures, settings.login_lockout_s)
    counters = [(login_counter(auth_by, login), login_limit)]
    if not await services.bans.whitelisted(gens, peer_ip):
        ip_limit = lockouts.Limit(settings.login_ip_max_failures, settings.login_lockout_s)
        counters.append((address_counter(peer_ip), ip_limit))
    was_locked, now_locked = await lockouts.record_failure(services.db, counters)
    if address_counter(peer_ip) in now_locked:
        await services.bans.ban(peer_ip, reason="too many wrong passwords", gens=gens)
    if login_counter(auth_by, login) in was_locked:  # locked by a parallel attempt meanwhile
        raise _locked()


async def succeeded(services: DirectoryContext, auth_by: str, login: str) -> None:
    if not await lockouts.record_success(services.db, [login_counter(auth_by, login)]):
        raise _locked()
