"""Where money may come from, and how much credit a non-administrator may grant.

The rules (docs/billing.md, "Where money comes from"):

- Money enters the system only through a master administrator's (level 44) refill: its
  `transferMoney` (and `registerUser … balance=`) credits the destination without
  debiting anybody, recorded as a `refill` row naming the author. Later: payments.
- Every other balance change moves money between two accounts, both legs in one
  database transaction (kind `transfer`), or takes money out (calls, fees).
- Administrators (>= 33) never set a balance (`updateAccount balance=` is refused, the
  spec's NB); they grant overdraft freely — that is the operator's own credit decision.
- A non-administrator (a reseller) grants overdraft only as far as it can cover it: its
  own available money (balance + overdraft − live holds of its own account) must stay at
  least the overdraft of every account of the users below it (its *granted* total). Each
  grant, each transfer out of its account and each funded registration is checked, under
  the lock of its own account row, so two grants at once cannot both pass on the same
  cover. Its own calls are not checked against it (a call cannot wait for a reseller's
  books); they are bounded by its own balance + overdraft like anybody's.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.directory.ownership import is_admin, is_master, managed_usernames
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.tables import accounts
from billing_core.money import ZERO
from billing_core.records import UserRecord

REFILL_KIND = "refill"


def refills(user: UserRecord) -> bool:
    """Does money `user` sends come from outside (a refill) rather than from its account?"""
    return is_master(user)


async def account_of(conn: AsyncConnection, user: UserRecord) -> int:
    """The user's account, read in the transaction (updateUser may have just moved it)."""
    return int((await conn.execute(select(users.c.account_id).where(users.c.id == user.id))).scalar_one())


async def granted_overdraft(conn: AsyncConnection, grantor: UserRecord, own_account: int) -> Decimal:
    """Σ overdraft of the accounts of the users below `grantor` (its own account excluded),
    as the transaction sees them. An account shared by users of two resellers counts for
    both, and a sub-reseller's grants count for its reseller too: a bound, not an
    apportionment."""
    below = await managed_usernames(conn, grantor.username) - {grantor.username}
    ids = set((await conn.execute(select(users.c.account_id).where(users.c.username.in_(sorted(below))))).scalars()) - {
        own_account
    }
    total = ZERO
    if ids:
        summed = (
            await conn.execute(select(func.coalesce(func.sum(accounts.c.overdraft), 0)).where(accounts.c.id.in_(ids)))
        ).scalar_one()
        total = Decimal(summed)
    return total


async def check_cover(
    conn: AsyncConnection,
    grantor: UserRecord,
    own_available: Decimal,
    own_account: int,
) -> None:
    """E_INSUFFICIENT_MONEY unless `own_available` (after the change being made, own
    account locked) covers what `grantor` granted. Administrators are not bound."""
    if is_admin(grantor):
        return
    granted = await granted_overdraft(conn, grantor, own_account)
    if granted > ZERO and own_available < granted:
        raise ApiError(
            ErrorCode.E_INSUFFICIENT_MONEY,
            f"the overdraft you granted ({granted} EUR) must stay covered by your own money",
        )
