"""Money moved by the API: transferMoney, updateAccount's balance, fees; getAccountInfo.

Every balance change locks the account row (SELECT … FOR UPDATE on PostgreSQL; SQLite
runs one transaction at a time) and writes its `transactions` row in the same
transaction, so balance = opening + Σ amount always holds. Rows of two accounts are
locked in ascending id order, so two opposite transfers cannot deadlock.

Kinds written here: `transfer` (both legs; also updateAccount's balance by a reseller,
which moves the difference from or to the reseller's own account), `refill` (a master
administrator's transferMoney: money entering the system), `fee` (transfer fee, tariff
switch price). Where money may come from: billing_core.ledger.money_rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import check_choice, check_length, invalid
from billing_core.clock import utcnow
from billing_core.directory.ownership import is_admin
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.account_access import account_relation
from billing_core.ledger.book import held
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency_or_system
from billing_core.ledger.money_rules import REFILL_KIND, account_of, check_cover, refills
from billing_core.ledger.tables import accounts, transactions
from billing_core.money import ZERO, check_storable, money_json
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

NEW_USER_LEVEL = 10  # "new user (limits - minimal first deposit)": may not send money away
REFILL_FORBIDDEN = 0
MONEY_FIELDS = frozenset({"balance", "overdraft", "refill_allowed", "postpaid"})
BILLING_FIELDS = {"billing_name": 100, "billing_address": 200, "billing_email": 100, "billing_bank_account": 200}


async def lock_accounts(conn: AsyncConnection, *account_ids: int) -> dict[int, Any]:
    """The account rows, locked for the rest of the transaction, in ascending id order."""
    rows = (
        await conn.execute(
            select(accounts)
            .where(accounts.c.id.in_(sorted(set(account_ids))))
            .order_by(accounts.c.id)
            .with_for_update()
        )
    ).all()
    return {row.id: row for row in rows}


async def available(conn: AsyncConnection, row: Any) -> Decimal:
    """What a locked account may still spend: balance + overdraft − its live holds (the
    ledger's definition, the one callPrepare uses)."""
    return Decimal(row.balance) + Decimal(row.overdraft) - await held(conn, row.id, utcnow())


async def post(conn: AsyncConnection, account_id: int, amount: Decimal, *, kind: str, ref: str, comment: str) -> None:
    """Change a (locked) balance by `amount` and record why, in the caller's transaction.

    E_INVALID_ARGUMENT when the new balance would not fit NUMERIC(18,4) (PostgreSQL would
    refuse the row with an error that is no answer)."""
    balance = (await conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id))).scalar_one()
    try:
        check_storable(Decimal(balance) + amount)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    await conn.execute(update(accounts).where(accounts.c.id == account_id).values(balance=accounts.c.balance + amount))
    await conn.execute(
        transactions.insert().values(
            account_id=account_id, amount=amount, kind=kind, ref=ref[:128], comment=comment[:256], created_at=utcnow()
        )
    )


async def charge_fee(conn: AsyncConnection, account_id: int, amount: Decimal, *, ref: str, comment: str) -> None:
    """Charge a fee in EUR if the account can pay it (E_INSUFFICIENT_MONEY otherwise)."""
    if amount <= ZERO:
        return
    row = (await lock_accounts(conn, account_id))[account_id]
    if amount > await available(conn, row):
        raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY)
    await post(conn, account_id, -amount, kind="fee", ref=ref, comment=comment)


async def _destination_account(conn: AsyncConnection, destination: str) -> int:
    """transferMoney's destination: an account number, else a user name."""
    if destination.isdigit() and len(destination) <= 9:
        found = (
            await conn.execute(
                select(accounts.c.id).where(accounts.c.id == int(destination), accounts.c.deleted_at.is_(None))
            )
        ).scalar()
        if found is not None:
            return int(found)
    found = (
        await conn.execute(
            select(users.c.account_id).where(users.c.username == destination, users.c.deleted_at.is_(None))
        )
    ).scalar()
    if found is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such account or user")
    return int(found)


async def transfer_money(
    services: LedgerContext, gens: Generations, sender: UserRecord, destination: str, amount: Decimal, comment: str
) -> None:
    """transferMoney: `amount` in the sender's currency from its account to another one;
    from a master administrator, a refill (money_rules): credited, debited from nobody."""
    if amount <= ZERO:
        raise invalid("amount must be positive")
    check_length("comment", comment, 256)
    if sender.accesslevel <= NEW_USER_LEVEL:
        raise ApiError(ErrorCode.E_TRANSACTIONS_LIMITED, "new users cannot transfer money")
    cur = await currency_or_system(services, gens, sender.currency)
    amount_eur = cur.to_eur(amount)
    refill = refills(sender)
    fee_eur = cur.to_eur(cur.transfer_fee) if cur.transfer_fee > ZERO and not refill else ZERO
    if amount_eur <= ZERO:
        raise invalid("amount is below the smallest amount (0.0001 EUR)")
    async with services.db.begin() as conn:
        target = await _destination_account(conn, destination)
        source = await account_of(conn, sender)
        if target == source:
            raise invalid("the destination is your own account")
        rows = await lock_accounts(conn, source, target)
        if any(row.refill_allowed == REFILL_FORBIDDEN for row in rows.values()):
            raise ApiError(ErrorCode.E_TRANSACTIONS_LOCKED)
        if refill:
            await post(conn, target, amount_eur, kind=REFILL_KIND, ref=f"refill:{sender.username}", comment=comment)
            log.info("money.refilled", target=target, by=sender.username, amount_eur=str(amount_eur))
            return
        left = await available(conn, rows[source]) - amount_eur - fee_eur
        if left < ZERO:
            raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY)
        await check_cover(conn, sender, left, source)
        await post(conn, source, -amount_eur, kind="transfer", ref=f"to:{target}", comment=comment)
        await post(conn, target, amount_eur, kind="transfer", ref=f"from:{source}", comment=comment)
        if fee_eur:
            await post(conn, source, -fee_eur, kind="fee", ref=f"transfer:{target}", comment="transfer fee")
    log.info("money.transferred", source=source, target=target, amount_eur=str(amount_eur), fee_eur=str(fee_eur))


def _check_account_changes(changes: Mapping[str, Any]) -> None:
    if not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update")
    for name, value in changes.items():
        if name == "overdraft" and value < ZERO:
            raise invalid("overdraft must not be negative")
        if name == "refill_allowed":
            check_choice(name, value, (0, 1, 2))
        if name == "postpaid":
            check_choice(name, value, (0, 1))
        if name in BILLING_FIELDS:
            check_length(name, value, BILLING_FIELDS[name])


async def update_account(
    services: LedgerContext,
    gens: Generations,
    caller: UserRecord,
    requester: UserRecord,
    account_id: int,
    changes: Mapping[str, Any],
) -> None:
    """updateAccount: money fields by administrators or the manager of every user on it;
    billing details also by the account's own users. Amounts are in the requester's currency.

    `balance` is refused to administrators (the spec: "users with access level over 33
    (administrators) cannot change users balance! Use transferMoney() function"); from a
    reseller it is a transfer of the difference from or to the reseller's own account.
    Overdraft granted by a reseller stays within its cover (money_rules)."""
    _check_account_changes(changes)
    if "balance" in changes and is_admin(caller):
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "administrators cannot change a balance: use transferMoney")
    cur = await currency_or_system(services, gens, requester.currency)
    values = dict(changes)
    for name in ("balance", "overdraft"):
        if name in values:
            values[name] = cur.to_eur(values[name])
            try:
                check_storable(values[name])
            except ValueError as exc:
                raise invalid(str(exc)) from exc
    async with services.db.begin() as conn:
        relation = await account_relation(conn, caller, account_id)
        if not relation.visible:
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
        if MONEY_FIELDS & values.keys() and not relation.may_change_money:
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "only your manager or an administrator can change this")
        own = await account_of(conn, caller)
        rows = await lock_accounts(conn, account_id, own)  # the grantor's row too: its cover
        row = rows[account_id]
        new_balance = values.pop("balance", None)
        if values:
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))
            rows = await lock_accounts(conn, account_id, own)
        delta = ZERO if new_balance is None else new_balance - Decimal(row.balance)
        if delta:
            await _move_for_update(conn, caller, rows[own], rows[account_id], delta)
        # only what adds to the grantor's exposure is checked: lowering it is always allowed
        if delta > ZERO or Decimal(rows[account_id].overdraft) > Decimal(row.overdraft):
            own_row = (await lock_accounts(conn, own))[own]
            await check_cover(conn, caller, await available(conn, own_row), own)


async def _move_for_update(conn: AsyncConnection, caller: UserRecord, own: Any, row: Any, delta: Decimal) -> None:
    """updateAccount's balance from a reseller: `delta` (EUR) moves from its own account
    `own` to the account `row` (or back when negative); each side must afford its leg."""
    if any(r.refill_allowed == REFILL_FORBIDDEN for r in (own, row)):
        raise ApiError(ErrorCode.E_TRANSACTIONS_LOCKED)
    payer, payee = (own, row) if delta > ZERO else (row, own)
    amount = abs(delta)
    if amount > await available(conn, payer):
        raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY)
    comment = f"updateAccount by {caller.username}"
    await post(conn, payer.id, -amount, kind="transfer", ref=f"to:{payee.id}", comment=comment)
    await post(conn, payee.id, amount, kind="transfer", ref=f"from:{payer.id}", comment=comment)
    log.info("money.moved_by_update", source=payer.id, target=payee.id, by=caller.username, amount_eur=str(amount))


async def account_info(
    services: LedgerContext, gens: Generations, caller: UserRecord, requester: UserRecord, account_id: int
) -> dict[str, Any]:
    """getAccountInfo, display amounts in the requester's currency."""
    cur = await currency_or_system(services, gens, requester.currency)
    async with services.db.begin() as conn:
        relation = await account_relation(conn, caller, account_id)
        if not relation.visible:
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
        row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).one()
        holds = await held(conn, account_id, utcnow())
    balance, overdraft = Decimal(row.balance), Decimal(row.overdraft)
    return {
        "account": row.id,
        "users": list(relation.usernames),
        "balance": money_json(balance),
        "displaybalance": money_json(cur.to_display(balance)),
        "overdraft": money_json(overdraft),
        "displayoverdraft": money_json(cur.to_display(overdraft)),
        "displaycurrency": cur.sign,
        "refill_allowed": row.refill_allowed,
        "postpaid": row.postpaid,
        "reserved": money_json(holds),
        "billing_name": row.billing_name,
        "billing_address": row.billing_address,
        "billing_email": row.billing_email,
        "billing_bank_account": row.billing_bank_account,
    }
