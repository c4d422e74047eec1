"""The money of prepaid codes (docs/billing.md, "Prepaid codes"), in the caller's transaction.

- A master administrator's code moves no money when it is created: its activation is a
  refill (money entering the system, kind `refill`, ref `refill:<creator>`), the same as
  the master's transferMoney.
- Anybody else's code is paid for when it is created: its face value leaves the
  creator's account (kind `transfer`, ref `code:<id>`), within the creator's available
  money and overdraft cover, as a transfer out would. Until activated the money is on the
  code; an activation credits the activating account from it (kind `transfer`, ref
  `code:<id>`), deleting or expiring the code gives what is left back to the account it
  came from (same kind and ref).

So Σ account balances changes only by refills, calls and fees, and by the money resting
on outstanding funded codes (Σ prepaid_codes.balance with a funded_account).
"""

from __future__ import annotations

from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.money_rules import REFILL_KIND, account_of, check_cover, refills
from billing_core.ledger.transfers import NEW_USER_LEVEL, REFILL_FORBIDDEN, available, lock_accounts, post
from billing_core.money import ZERO
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

TRANSFER_KIND = "transfer"


def code_ref(code_id: int) -> str:
    return f"code:{code_id}"


async def fund_code(conn: AsyncConnection, creator: UserRecord, amount_eur: Decimal, code_id: int) -> int | None:
    """Pay for a new code of `amount_eur`: the account it was taken from, or None when
    nothing moves (a zero code, or a master administrator's: a refill at activation)."""
    if amount_eur <= ZERO or refills(creator):
        return None
    if creator.accesslevel <= NEW_USER_LEVEL:
        raise ApiError(ErrorCode.E_TRANSACTIONS_LIMITED, "new users cannot fund prepaid codes")
    own = await account_of(conn, creator)
    row = (await lock_accounts(conn, own))[own]
    if row.refill_allowed == REFILL_FORBIDDEN:
        raise ApiError(ErrorCode.E_TRANSACTIONS_LOCKED)
    left = await available(conn, row) - amount_eur
    if left < ZERO:
        raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY, "a prepaid code's balance comes from your own account")
    await check_cover(conn, creator, left, own)
    await post(conn, own, -amount_eur, kind=TRANSFER_KIND, ref=code_ref(code_id), comment="prepaid code created")
    log.info("money.code_funded", code=code_id, account=own, amount_eur=str(amount_eur))
    return own


async def credit_from_code(
    conn: AsyncConnection,
    account_id: int,
    amount_eur: Decimal,
    *,
    code_id: int,
    creator: str,
    funded: bool,
    comment: str,
) -> None:
    """Credit `account_id` with `amount_eur` of a code: from the code's own money when it
    was funded, else a refill by its (master administrator) creator."""
    if amount_eur <= ZERO:
        return
    row = (await lock_accounts(conn, account_id))[account_id]
    if row.refill_allowed == REFILL_FORBIDDEN:
        raise ApiError(ErrorCode.E_TRANSACTIONS_LOCKED)
    if funded:
        await post(conn, account_id, amount_eur, kind=TRANSFER_KIND, ref=code_ref(code_id), comment=comment)
    else:
        await post(conn, account_id, amount_eur, kind=REFILL_KIND, ref=f"refill:{creator}", comment=comment)
    log.info("money.code_credited", code=code_id, account=account_id, amount_eur=str(amount_eur), refill=not funded)


async def refund_code(conn: AsyncConnection, funded_account: int, amount_eur: Decimal, *, code_id: int) -> None:
    """Give what is left on a deleted or expired funded code back to the account that paid."""
    if amount_eur <= ZERO:
        return
    await lock_accounts(conn, funded_account)
    await post(
        conn, funded_account, amount_eur, kind=TRANSFER_KIND, ref=code_ref(code_id), comment="prepaid code refund"
    )
    log.info("money.code_refunded", code=code_id, account=funded_account, amount_eur=str(amount_eur))
