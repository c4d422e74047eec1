"""deleteUser, deleteExtension, deleteAccount: soft deletes, nothing the books need is removed.

A deleted row keeps its id, its name and every CDR, hold and transaction that names it;
`deleted_at` hides it from every read and from login (billing_core.directory.profiles,
ownership, user_info, account_access). Its name stays taken: a new user, SIP account or
key cannot take the identity the books know. What each delete refuses, and why:

- a call in progress (an open hold) of the user: its callFinish must still find the
  user to charge it (E_CANT_DELETE_EXTENSION for a SIP account, E_DATA_ABORT for a user);
- a user who still manages live users (their manager chain would end in a hidden user),
  the caller itself, a user of a higher level (E_DOES_NOT_BELONG_TO_YOU);
- an account that live users are still on (E_ACCOUNT_HAS_USERS).

deleteUser also deletes the user's SIP accounts and revokes the API keys it owns; its
account stays (other users may share it; deleteAccount once it is empty).
"""

from __future__ import annotations

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import existing_row
from billing_core.clock import utcnow
from billing_core.directory.keys import revoke_where
from billing_core.directory.ownership import is_admin, live_user, managers_in
from billing_core.directory.tables import api_keys, sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.tables import accounts, reservations
from billing_core.provisioning.extensions import owned_extension
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)


async def _calls_in_progress(conn: AsyncConnection, user_id: int) -> bool:
    open_holds = select(func.count()).where(reservations.c.user_id == user_id, reservations.c.state == "open")
    return int((await conn.execute(open_holds)).scalar_one()) > 0


async def delete_user(services: LedgerContext, caller: UserRecord, target: UserRecord) -> None:
    """deleteUser of `target`, whom the caller reaches (checked by the caller of this)."""
    if target.id == caller.id:
        raise ApiError(ErrorCode.E_DATA_ABORT, "you cannot delete yourself")
    if target.accesslevel > caller.accesslevel:
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "cannot delete a user of a higher level")
    now = utcnow()
    async with services.db.begin() as conn:
        row = await existing_row(
            conn, select(users.c.id).where(users.c.id == target.id, live_user()), "no such user"
        )
        managed = await conn.execute(select(users.c.username).where(users.c.manager == target.username, live_user()))
        if managed.first() is not None:
            raise ApiError(ErrorCode.E_DATA_ABORT, "this user manages users: delete them or move them first")
        if await _calls_in_progress(conn, row.id):
            raise ApiError(ErrorCode.E_DATA_ABORT, "this user has a call in progress: try again when it ends")
        await conn.execute(update(users).where(users.c.id == row.id).values(deleted_at=now, active=-1))
        await conn.execute(
            update(sip_extensions)
            .where(sip_extensions.c.user_id == row.id, sip_extensions.c.deleted_at.is_(None))
            .values(deleted_at=now)
        )
        await revoke_where(conn, api_keys.c.owner == target.username)
    log.info("user.deleted", user=target.username, by=caller.username)


async def delete_extension(services: LedgerContext, caller: UserRecord, name: str) -> None:
    async with services.db.begin() as conn:
        row = await owned_extension(conn, caller, name)
        if await _calls_in_progress(conn, row.user_id):
            raise ApiError(
                ErrorCode.E_CANT_DELETE_EXTENSION, "its owner has a call in progress: try again when it ends"
            )
        await conn.execute(update(sip_extensions).where(sip_extensions.c.id == row.id).values(deleted_at=utcnow()))
    log.info("extension.deleted", extension=name, by=caller.username)


async def delete_account(services: LedgerContext, caller: UserRecord, account_id: int) -> None:
    """The account is the caller's to delete when every user ever on it (deleted ones too)
    is the caller or below it; an account no user was ever on, an administrator's."""
    async with services.db.begin() as conn:
        await existing_row(
            conn,
            select(accounts.c.id).where(accounts.c.id == account_id, accounts.c.deleted_at.is_(None)),
            "no such account",
        )
        on_it = (
            await conn.execute(
                select(users.c.username, users.c.deleted_at).where(users.c.account_id == account_id)
            )
        ).all()
        if not is_admin(caller):
            names = [r.username for r in on_it]
            mine = [n == caller.username or caller.username in await managers_in(conn, n) for n in names]
            if not names or not all(mine):
                raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
        if any(r.deleted_at is None for r in on_it):
            raise ApiError(ErrorCode.E_ACCOUNT_HAS_USERS)
        await conn.execute(update(accounts).where(accounts.c.id == account_id).values(deleted_at=utcnow()))
    log.info("account.deleted", account=account_id, by=caller.username)
