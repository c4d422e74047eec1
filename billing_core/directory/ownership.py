"""Ownership and visibility: whose objects a user may see or change. Every rule once.

Levels (the spec's User object `accesslevel`): resellers — corporate users (22) and
partners (25) — manage their users down the manager chain; administrators (>= 33) see
and change everything; master administrators (44) own server keys that serve everyone.

The manager chain is walked by one rule (`walk_managers`: nearest manager first, at most
MAX_CHAIN_DEPTH, stopping at a cycle) from two sources:
- the cached profiles (`Profiles.manager_chain`), for checks made outside a transaction:
  `reaches`, `reachable_user`, `key_owner_serves`;
- the caller's transaction (`managers_in`): inside a transaction nothing may call the
  cached profiles (on SQLite the one connection is already taken): `reaches_in`,
  `reseller_reaches_in`, and the rules built on them (billing_core.ledger.account_access,
  billing_core.rating.tariff_access).

Variants that differ on purpose (each caller keeps its own):
- `reaches` / `reaches_in`: the user itself, an administrator, or any manager up the chain.
- `reseller_reaches_in` (routes, tariffs): the same, except that a manager below reseller
  level (22) reaches only its own objects, not those of the users it manages.
- `key_owner_serves` (a server key's `login=`, DISA, resolveDIDRule): the key owner
  itself, its users down the chain, or everyone when the owner is a master administrator
  (44); an administrator (33) owner gets no wider reach than its chain.
- `managed_usernames` (route and tariff lists, all=true): the user itself and the users
  up to MAX_CHAIN_DEPTH levels below it, walked level by level; `subtree` (getUsers): the
  users below the root, without the root, as a recursive CTE with no depth bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import existing_row
from billing_core.directory.managers import MAX_CHAIN_DEPTH, walk_managers
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.records import UserRecord

if TYPE_CHECKING:
    from billing_core.directory.profiles import Profiles

Generations = dict[str, int] | None

RESELLER_LEVEL = 22  # manages users and tariffs (25 adds main routes)
ADMIN_LEVEL = 33  # system administrators see and edit everything
MASTER_LEVEL = 44  # the spec's "exclusive rights": a server key of theirs serves every user


def live_user() -> ColumnElement[bool]:
    """Users not deleted (deleteUser keeps the row for the books and hides it from every read)."""
    return users.c.deleted_at.is_(None)


def is_admin(user: UserRecord | None) -> bool:
    return user is not None and user.accesslevel >= ADMIN_LEVEL


def is_master(user: UserRecord) -> bool:
    return user.accesslevel >= MASTER_LEVEL


# --- the manager chain -------------------------------------------------------------------


async def managers_in(conn: AsyncConnection, username: str) -> list[str]:
    """Managers above `username`, nearest first, read in the caller's transaction."""

    async def manager_of(name: str) -> str | None:
        manager: str | None = (await conn.execute(select(users.c.manager).where(users.c.username == name))).scalar()
        return manager

    return await walk_managers(username, manager_of)


async def reaches(profiles: Profiles, gens: Generations, caller: UserRecord, username: str) -> bool:
    """Does `caller` reach `username`: itself, an administrator, or a manager up its chain."""
    if caller.username == username or is_admin(caller):
        return True
    return caller.username in await profiles.manager_chain(gens, username)


async def reachable_user(profiles: Profiles, gens: Generations, caller: UserRecord, username: str) -> UserRecord:
    """The named user if the caller reaches it: E_NOT_EXIST / E_DOES_NOT_BELONG_TO_YOU otherwise."""
    target = await profiles.user_by(gens, "username", username)
    if target is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such user")
    if not await reaches(profiles, gens, caller, target.username):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
    return target


async def reaches_in(conn: AsyncConnection, caller: UserRecord, username: str) -> bool:
    """`reaches`, read in the caller's transaction."""
    if caller.username == username or is_admin(caller):
        return True
    return caller.username in await managers_in(conn, username)


async def reseller_reaches_in(conn: AsyncConnection, actor: UserRecord, owner: str) -> bool:
    """May `actor` change a route or tariff owned by `owner`? `reaches_in`, except that
    only resellers (>= 22) reach the objects of the users they manage."""
    if is_admin(actor) or owner == actor.username:
        return True
    if actor.accesslevel < RESELLER_LEVEL:
        return False
    return actor.username in await managers_in(conn, owner)


async def changeable_row(conn: AsyncConnection, actor: UserRecord, table: Table, row_id: int, what: str) -> Any:
    """The route or tariff row (`table` has `id` and `owner`) if `actor` may change it
    (`reseller_reaches_in` its owner): E_NOT_EXIST / E_DOES_NOT_BELONG_TO_YOU otherwise."""
    row = await existing_row(conn, select(table).where(table.c.id == row_id), f"no {what} {row_id}")
    if not await reseller_reaches_in(conn, actor, row.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"{what} {row_id} is not yours")
    return row


async def key_owner_serves(profiles: Profiles, gens: Generations, key_owner: str, username: str) -> bool:
    """Does a server key owned by `key_owner` serve `username`? The owner itself, users it
    manages down the chain, or everyone when the owner is a master administrator."""
    if username == key_owner:
        return True
    owner = await profiles.user_by(gens, "username", key_owner)
    if owner is not None and is_master(owner):
        return True
    return key_owner in await profiles.manager_chain(gens, username)


# --- the users below someone -------------------------------------------------------------


async def managed_usernames(conn: AsyncConnection, username: str) -> set[str]:
    """`username` and every user below it in the manager tree (MAX_CHAIN_DEPTH levels)."""
    seen = {username}
    frontier = {username}
    for _ in range(MAX_CHAIN_DEPTH):
        below = set(
            (await conn.execute(select(users.c.username).where(users.c.manager.in_(frontier), live_user()))).scalars()
        )
        frontier = below - seen
        if not frontier:
            break
        seen |= frontier
    return seen


def subtree(root: str) -> Select[Any]:
    """Live usernames below `root` down the manager chain (UNION stops on cycles)."""
    tree = select(users.c.username).where(users.c.manager == root, live_user()).cte("tree", recursive=True)
    tree = tree.union(select(users.c.username).join(tree, users.c.manager == tree.c.username).where(live_user()))
    return select(tree.c.username).where(tree.c.username != root)


async def admin_usernames(conn: AsyncConnection) -> set[str]:
    query = select(users.c.username).where(users.c.accesslevel >= ADMIN_LEVEL, live_user())
    return set((await conn.execute(query)).scalars())


async def listing_owners(conn: AsyncConnection, actor: UserRecord, include_managed: bool) -> set[str] | None:
    """Owners whose routes/tariffs a list shows a reseller or administrator; None = every owner.

    The spec's `all` ("belonging to corporate users") widens the list: an administrator
    sees the administrators' objects, with all=true everybody's; a reseller its own, with
    all=true also those of the users it manages.
    """
    if is_admin(actor):
        return None if include_managed else await admin_usernames(conn)
    if include_managed:
        return await managed_usernames(conn, actor.username)
    return {actor.username}


# --- secrets -----------------------------------------------------------------------------


def may_see_secrets(viewer: UserRecord | None, owner: str) -> bool:
    """SIP passwords and PINs: only the extension's owner and administrators."""
    return viewer is not None and (viewer.username == owner or is_admin(viewer))
