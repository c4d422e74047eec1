"""getAccounts: the accounts of the users below the actor, as the spec's account object.

Spec: all [false] "show accounts of resellers". Without it, the accounts of the users
below the actor (down the manager chain) whose level is below reseller (22); with it,
those of the resellers below it too, and for an administrator every account a live user
is on. A deleted account, or one with no live user, is not listed (getAccountInfo and
deleteAccount still take its number). `users` names only the users the list is about.
Balances in EUR; display* in the actor's currency.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, select, true

from billing_core.directory.ownership import RESELLER_LEVEL, is_admin, live_user, subtree
from billing_core.directory.tables import users
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency_or_system
from billing_core.ledger.tables import accounts
from billing_core.money import money_json
from billing_core.records import UserRecord

Generations = dict[str, int] | None


async def list_accounts(
    services: LedgerContext, gens: Generations, actor: UserRecord, *, resellers: bool
) -> list[dict[str, Any]]:
    who: ColumnElement[bool]
    if resellers and is_admin(actor):
        who = true()
    else:
        who = users.c.username.in_(subtree(actor.username))
        if not resellers:
            who = who & (users.c.accesslevel < RESELLER_LEVEL)
    cur = await currency_or_system(services, gens, actor.currency)
    query = (
        select(accounts, users.c.username)
        .join(users, users.c.account_id == accounts.c.id)
        .where(who, live_user(), accounts.c.deleted_at.is_(None))
        .order_by(accounts.c.id, users.c.id)
    )
    async with services.db.begin() as conn:
        rows = (await conn.execute(query)).all()
    listed: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.id in listed:
            listed[row.id]["users"].append(row.username)
            continue
        balance, overdraft = Decimal(row.balance), Decimal(row.overdraft)
        listed[row.id] = {
            "account": row.id,
            "users": [row.username],
            "balance": money_json(balance),
            "displaybalance": money_json(cur.to_display(balance)),
            "overdraft": money_json(overdraft),
            "displayoverdraft": money_json(cur.to_display(overdraft)),
            "displaycurrency": cur.sign,
            "refill_allowed": row.refill_allowed,
            "postpaid": row.postpaid,
        }
    return list(listed.values())
