"""How a caller stands to an account (on it, managing its users): who may see it, attach
users to it or change its money. The directory's ownership rules applied to accounts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import existing_row
from billing_core.directory.ownership import is_admin, managers_in
from billing_core.directory.tables import users
from billing_core.ledger.tables import accounts
from billing_core.records import UserRecord


@dataclass(frozen=True, slots=True)
class AccountRelation:
    """How a caller stands to an account: on it, and/or managing its users."""

    caller: str
    caller_is_admin: bool
    usernames: tuple[str, ...]  # the users on the account
    managed: frozenset[str]  # those of them below the caller

    @property
    def caller_on_account(self) -> bool:
        return self.caller in self.usernames

    @property
    def manages_all(self) -> bool:
        """Every user on it is below the caller (never true for an empty account)."""
        return bool(self.usernames) and all(n in self.managed for n in self.usernames)

    @property
    def controls(self) -> bool:
        """May attach users to it: administrators, or only the caller and its users are on it."""
        return self.caller_is_admin or (
            bool(self.usernames) and all(n == self.caller or n in self.managed for n in self.usernames)
        )

    @property
    def may_change_money(self) -> bool:
        """Balance, overdraft, refill_allowed, postpaid: administrators or the manager of every user."""
        return self.caller_is_admin or self.manages_all

    @property
    def visible(self) -> bool:
        return self.caller_is_admin or self.caller_on_account or self.manages_all


async def account_relation(conn: AsyncConnection, caller: UserRecord, account_id: int) -> AccountRelation:
    """E_NOT_EXIST for an unknown account; read in the caller's transaction."""
    live = accounts.c.deleted_at.is_(None)  # deleteAccount: hidden, kept for the books
    await existing_row(conn, select(accounts.c.id).where(accounts.c.id == account_id, live), "no such account")
    on_account = select(users.c.username).where(users.c.account_id == account_id, users.c.deleted_at.is_(None))
    names = tuple((await conn.execute(on_account.order_by(users.c.id))).scalars().all())
    managed = frozenset([n for n in names if caller.username in await managers_in(conn, n)])
    return AccountRelation(caller.username, is_admin(caller), names, managed)
