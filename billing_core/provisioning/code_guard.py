"""Abuse limits of prepaid codes: anonymous registration is rate-limited per source
address, and wrong codes count toward the same lock-out as wrong passwords.

- Every registerRequest and registerByCode from an address counts on `register:<address>`:
  `register_ip_max_requests` of them, each within `login_lockout_s` of the previous one,
  lock the address's registrations for `login_lockout_s` (E_INVITE_LIMIT_REACHED).
- A wrong code (unknown, deleted, expired, replaced; registerByCode's simulation too, or
  it would be a free oracle) counts on the address counter of failed logins
  (`ip:<address>`, billing_core.directory.login_guard): `login_ip_max_failures` of them,
  logins and codes together, ban the address as a bad key does. activatePrepaidCode also
  counts on the user (`code:<username>`): `login_max_failures` lock that user's
  activations for `login_lockout_s` (E_USER_LOCKED).
- Whitelisted addresses (CALLGATE_BAN_WHITELIST, call-control hosts) are never counted: a
  registration portal that relays its visitors from one address belongs there, and then
  limits its visitors itself.
"""

from __future__ import annotations

from billing_core.directory import lockouts
from billing_core.directory.context import DirectoryContext
from billing_core.directory.login_guard import address_counter
from billing_core.directory.profiles import Generations
from billing_core.errors import ApiError, ErrorCode


def request_counter(peer_ip: str) -> str:
    return lockouts.counter_key("register", peer_ip)


def user_counter(username: str) -> str:
    return lockouts.counter_key("code", username)


async def count_registration(services: DirectoryContext, gens: Generations, peer_ip: str) -> None:
    """Count one anonymous registration request; E_INVITE_LIMIT_REACHED past the limit."""
    if await services.bans.whitelisted(gens, peer_ip):
        return
    settings = services.settings
    limit = lockouts.Limit(settings.register_ip_max_requests, settings.login_lockout_s)
    was_locked, _ = await lockouts.record_failure(services.db, [(request_counter(peer_ip), limit)])
    if request_counter(peer_ip) in was_locked:
        raise ApiError(ErrorCode.E_INVITE_LIMIT_REACHED, "too many registration requests from this address")


async def refuse_if_locked(services: DirectoryContext, username: str) -> None:
    if await lockouts.locked(services.db, [user_counter(username)]):
        raise ApiError(ErrorCode.E_USER_LOCKED, "too many wrong prepaid codes: activation is locked for a while")


async def wrong_code(services: DirectoryContext, gens: Generations, peer_ip: str, username: str | None) -> None:
    """Count a wrong code on the address (and on the user, when there is one)."""
    settings = services.settings
    counters: list[tuple[str, lockouts.Limit]] = []
    if username is not None:
        counters.append((user_counter(username), lockouts.Limit(settings.login_max_failures, settings.login_lockout_s)))
    if not await services.bans.whitelisted(gens, peer_ip):
        ip_limit = lockouts.Limit(settings.login_ip_max_failures, settings.login_lockout_s)
        counters.append((address_counter(peer_ip), ip_limit))
    _, now_locked = await lockouts.record_failure(services.db, counters)
    if address_counter(peer_ip) in now_locked:
        await services.bans.ban(peer_ip, reason="too many wrong passwords or prepaid codes", gens=gens)
