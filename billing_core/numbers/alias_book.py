"""Aliases as the API changes them: getAliases, getAlias, addAlias, updateAlias, deleteAlias.

Who may do what (billing_core.directory.ownership's rules):
- an alias belongs to its `owner`: a user's aliases are its own; whoever `reaches` the
  owner (its managers up the chain, administrators) may read and change them;
- `sip_extension=` sets an alias to one SIP account; its owner is the account's owner, who
  must be reached by the actor. Without it the alias is the actor's (or `username=`'s) for
  all of its extensions;
- `global=true` (every caller's alias) is for administrators (level >= 33) only; anybody
  may read a global alias, since it applies to anybody's calls.

Every write checks, in its transaction and against the aliases as they will be, that no
caller whose calls the changed alias applies to meets a cycle (the spec's "endless loop",
E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING) or a chain of more than aliases.MAX_CHAIN
aliases (E_DATA_ABORT). Writes take turns (a transaction-scoped advisory lock on
PostgreSQL; SQLite has one writer), so two writes cannot each pass against the other's
old state. The registry methods bump NS_ALIASES after every write.

An alias is configuration, not a book: deleteAlias removes its row. A call keeps what it
was rated at in its hold and its CDR (docs/billing.md, "Aliases").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.clock import utcnow
from billing_core.directory.context import DirectoryContext
from billing_core.directory.ownership import is_admin, managed_usernames, reaches_in
from billing_core.directory.tables import sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.numbers.aliases import (
    GLOBAL,
    MAX_CHAIN,
    AliasIndex,
    AliasLoop,
    caller_scopes,
    dialled_number,
    extension_scope,
    user_scope,
)
from billing_core.numbers.tables import aliases
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

WRITE_LOCK_KEY = 0x616C6961736573  # "aliases": alias writes take turns on PostgreSQL


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an alias applies: its scope, its owner and its SIP account ('' unless one)."""

    scope: str
    owner: str
    sip_extension: str


def alias_json(row: Any) -> dict[str, Any]:
    """The spec's alias object (global 0/1, id, owner, alias, destination), plus the SIP
    account it is set to ('' when it applies to all of the owner's)."""
    return {
        "global": int(row.scope == GLOBAL),
        "id": row.id,
        "owner": row.owner,
        "alias": row.alias,
        "destination": row.destination,
        "sip_extension": row.sip_extension,
    }


# --- reading -------------------------------------------------------------------------------


async def list_aliases(services: DirectoryContext, actor: UserRecord, *, everything: bool) -> list[dict[str, Any]]:
    """getAliases: the actor's own aliases; with all=true every alias it may see (its own,
    its users' down the manager chain, the global ones; an administrator: all)."""
    async with services.db.begin() as conn:
        query = select(aliases).order_by(aliases.c.id)
        if not everything:
            query = query.where(aliases.c.owner == actor.username)
        elif not is_admin(actor):
            owners = await managed_usernames(conn, actor.username)
            query = query.where(or_(aliases.c.owner.in_(owners), aliases.c.scope == GLOBAL))
        rows = (await conn.execute(query)).all()
    return [alias_json(row) for row in rows]


async def get_alias(services: DirectoryContext, actor: UserRecord, alias_id: int) -> dict[str, Any]:
    async with services.db.begin() as conn:
        row = await _alias_row(conn, alias_id)
        if row.scope != GLOBAL and not await reaches_in(conn, actor, row.owner):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"alias {alias_id} is not yours")
    return alias_json(row)


async def _alias_row(conn: AsyncConnection, alias_id: int) -> Any:
    row = (await conn.execute(select(aliases).where(aliases.c.id == alias_id))).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"no alias {alias_id}")
    return row


async def _changeable_row(conn: AsyncConnection, actor: UserRecord, alias_id: int) -> Any:
    row = await _alias_row(conn, alias_id)
    if row.scope == GLOBAL:
        if not is_admin(actor):
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "global aliases are the administrators'")
    elif not await reaches_in(conn, actor, row.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"alias {alias_id} is not yours")
    return row


async def _row_named(conn: AsyncConnection, actor: UserRecord, name: str) -> Any:
    """The actor's own alias named `name` (updateAlias as the spec's example calls it:
    `alias=111`, no id)."""
    rows = (
        await conn.execute(select(aliases).where(aliases.c.owner == actor.username, aliases.c.alias == name))
    ).all()
    if not rows:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"you have no alias {name}")
    if len(rows) > 1:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"you have {len(rows)} aliases {name}: name one by id")
    return rows[0]


# --- writing -------------------------------------------------------------------------------


async def add_alias(
    services: DirectoryContext,
    actor: UserRecord,
    *,
    alias: str,
    destination: str,
    sip_extension: str | None,
    is_global: bool,
) -> int:
    """addAlias: the new alias's id."""
    name, target = _number("alias", alias), _number("destination", destination)
    if is_global and not is_admin(actor):
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "global aliases are the administrators'")
    if is_global and sip_extension:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "a global alias is set to no SIP account")
    try:
        async with services.db.begin() as conn:
            await _take_turn(conn)
            if is_global:
                place = Placement(GLOBAL, actor.username, "")
            else:
                place = await _placement(conn, actor, actor.username, sip_extension or "")
            await _refuse_taken(conn, place.scope, name)
            await _check_chains(conn, place, [(place.scope, name, target)], drop_id=None)
            result = await conn.execute(
                aliases.insert().values(
                    alias=name, destination=target, owner=place.owner, sip_extension=place.sip_extension,
                    scope=place.scope, created_at=utcnow(),
                )
            )  # fmt: skip
    except IntegrityError:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"alias {name} exists already here") from None
    key = result.inserted_primary_key
    assert key is not None
    log.info("aliases.added", alias=name, scope=place.scope, by=actor.username)
    return int(key[0])


async def update_alias(
    services: DirectoryContext,
    actor: UserRecord,
    *,
    alias_id: int | None,
    name: str | None,
    destination: str | None,
    sip_extension: str | None,
) -> None:
    """updateAlias: a new destination and/or SIP account ('' = all of the owner's)."""
    if destination is None and sip_extension is None:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update: destination or sip_extension")
    target = None if destination is None else _number("destination", destination)
    try:
        async with services.db.begin() as conn:
            await _take_turn(conn)
            if alias_id is not None:
                row = await _changeable_row(conn, actor, alias_id)
            else:
                row = await _row_named(conn, actor, _number("alias", name or ""))
            place = Placement(row.scope, row.owner, row.sip_extension)
            if sip_extension is not None and sip_extension != row.sip_extension:
                if row.scope == GLOBAL:
                    raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "a global alias is set to no SIP account")
                place = await _placement(conn, actor, row.owner, sip_extension)
                if place.scope != row.scope:
                    await _refuse_taken(conn, place.scope, row.alias)
            new_target = row.destination if target is None else target
            await _check_chains(conn, place, [(place.scope, row.alias, new_target)], drop_id=row.id)
            await conn.execute(
                aliases.update()
                .where(aliases.c.id == row.id)
                .values(
                    destination=new_target, owner=place.owner, sip_extension=place.sip_extension, scope=place.scope
                )
            )
    except IntegrityError:
        raise ApiError(ErrorCode.E_DATA_ABORT, "an alias of that name exists already there") from None
    log.info("aliases.updated", id=row.id, scope=place.scope, by=actor.username)


async def delete_alias(services: DirectoryContext, actor: UserRecord, alias_id: int) -> None:
    async with services.db.begin() as conn:
        row = await _changeable_row(conn, actor, alias_id)
        await conn.execute(aliases.delete().where(aliases.c.id == row.id))
    log.info("aliases.deleted", id=alias_id, alias=row.alias, scope=row.scope, by=actor.username)


def _number(argument: str, value: str) -> str:
    """A dialled number as callPrepare reads one (digits, a leading '+' dropped)."""
    number = dialled_number(value)
    if number is None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"{argument} must be 1 to 32 digits, optionally after '+'")
    return number


async def _take_turn(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})


async def _placement(conn: AsyncConnection, actor: UserRecord, owner: str, sip_extension: str) -> Placement:
    """An alias of `owner` for all its extensions, or set to `sip_extension` (then the SIP
    account's owner owns it, and the actor must reach that owner)."""
    if not sip_extension:
        return Placement(user_scope(owner), owner, "")
    ext_owner = (
        await conn.execute(
            select(users.c.username)
            .join(sip_extensions, sip_extensions.c.user_id == users.c.id)
            .where(sip_extensions.c.sip_extension == sip_extension, sip_extensions.c.deleted_at.is_(None))
        )
    ).scalar()
    if ext_owner is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such SIP account")
    if not await reaches_in(conn, actor, ext_owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the SIP account is not yours")
    return Placement(extension_scope(sip_extension), ext_owner, sip_extension)


async def _refuse_taken(conn: AsyncConnection, scope: str, name: str) -> None:
    taken = await conn.execute(select(aliases.c.id).where(aliases.c.scope == scope, aliases.c.alias == name))
    if taken.first() is not None:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"alias {name} exists already here")


async def _check_chains(
    conn: AsyncConnection, place: Placement, new_rows: Sequence[tuple[str, str, str]], *, drop_id: int | None
) -> None:
    """Refuse the write if, with it, a caller the changed scope applies to meets a cycle or
    a chain too long. Only the aliases those callers see are read: for an alias of one
    user, that user's and the global ones; for a global one, all of them."""
    query = select(aliases.c.id, aliases.c.scope, aliases.c.alias, aliases.c.destination, aliases.c.owner)
    if place.scope != GLOBAL:
        query = query.where(or_(aliases.c.owner == place.owner, aliases.c.scope == GLOBAL))
    rows = [row for row in (await conn.execute(query)).all() if row.id != drop_id]
    index = AliasIndex([*((r.scope, r.alias, r.destination) for r in rows), *new_rows])
    # Each caller is (its extension's scope, its user's scope, global); which extensions
    # belong to which user is known from the extension aliases' owners.
    ext_owner = {r.scope: r.owner for r in rows if r.scope.startswith("ext:")}
    if place.scope.startswith("ext:"):
        ext_owner[place.scope] = place.owner
    users_seen = {r.owner for r in rows if r.scope != GLOBAL} | ({place.owner} if place.scope != GLOBAL else set())
    callers: list[tuple[str, ...]] = [(GLOBAL,)]
    callers += [caller_scopes(None, u) for u in sorted(users_seen)]
    callers += [(scope, user_scope(owner), GLOBAL) for scope, owner in sorted(ext_owner.items())]
    for scopes in callers:
        if place.scope in scopes:
            _check_caller(index, scopes)


def _check_caller(index: AliasIndex, scopes: tuple[str, ...]) -> None:
    """Every name one caller sees resolves (no cycle, not too long)."""
    names = set().union(*(index.by_scope.get(scope, {}).keys() for scope in scopes))
    for name in sorted(names):
        try:
            index.resolve(scopes, name)
        except AliasLoop as loop:
            chain = " -> ".join(loop.chain)
            if loop.cycle:
                raise ApiError(ErrorCode.E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING, f"alias loop {chain}") from None
            raise ApiError(ErrorCode.E_DATA_ABORT, f"more than {MAX_CHAIN} aliases in a row: {chain}") from None
