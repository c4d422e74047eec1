"""Who may read which tariff, and which tariffs a list shows (getRates, getRatesList):
the directory's ownership rules (billing_core.directory.ownership) applied to tariffs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.directory.ownership import (
    ADMIN_LEVEL,
    RESELLER_LEVEL,
    admin_usernames,
    listing_owners,
    reseller_reaches_in,
)
from billing_core.directory.tables import extension_options, sip_extensions, users
from billing_core.rating.tables import tariffs
from billing_core.records import UserRecord


async def current_tariff_ids(conn: AsyncConnection, user: UserRecord) -> set[int]:
    """The tariffs `user` is on: its rates_id, its extensions' sip_rates_id and active options."""
    ids: set[int] = set()
    rates_id = (await conn.execute(select(users.c.rates_id).where(users.c.id == user.id))).scalar()
    if rates_id is not None:
        ids.add(int(rates_id))
    ext_rows = (
        await conn.execute(
            select(sip_extensions.c.id, sip_extensions.c.sip_rates_id).where(
                sip_extensions.c.user_id == user.id, sip_extensions.c.deleted_at.is_(None)
            )
        )
    ).all()
    ids.update(int(r.sip_rates_id) for r in ext_rows if r.sip_rates_id is not None)
    if ext_rows:
        options = await conn.execute(
            select(extension_options.c.tariff_id).where(extension_options.c.extension_id.in_([r.id for r in ext_rows]))
        )
        ids.update(int(t) for t in options.scalars())
    return ids


async def provider_owners(conn: AsyncConnection, user: UserRecord) -> set[str]:
    """Whose public tariffs `user` is offered: its manager's, or the administrators'."""
    if user.manager:
        level = (await conn.execute(select(users.c.accesslevel).where(users.c.username == user.manager))).scalar()
        if level is not None and level < ADMIN_LEVEL:
            return {user.manager}
    return await admin_usernames(conn)


async def may_read_tariff(conn: AsyncConnection, actor: UserRecord, row: Any) -> bool:
    """May `actor` read the tariff `row` (getRates; a tariff it may put itself or its users
    on): its own and its users' (resellers), the ones it is on, its provider's public ones."""
    if await reseller_reaches_in(conn, actor, row.owner):
        return True
    if row.id in await current_tariff_ids(conn, actor):
        return True
    return bool(row.is_public) and row.owner in await provider_owners(conn, actor)


async def tariff_list_filter(
    conn: AsyncConnection, actor: UserRecord, include_managed: bool
) -> ColumnElement[bool] | None:
    """getRatesList's rule as a WHERE clause on `tariffs` (None: every tariff).

    Resellers and administrators: `listing_owners`. Ordinary users (< 22): the public
    tariffs of their provider and the tariffs they are on.
    """
    if actor.accesslevel >= RESELLER_LEVEL:
        owners = await listing_owners(conn, actor, include_managed)
        return None if owners is None else tariffs.c.owner.in_(sorted(owners))
    current = await current_tariff_ids(conn, actor)
    providers = await provider_owners(conn, actor)
    offered = tariffs.c.is_public.is_(True) & tariffs.c.owner.in_(sorted(providers))
    return offered | tariffs.c.id.in_(sorted(current)) if current else offered
