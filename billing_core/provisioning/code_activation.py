"""Using a prepaid code: activatePrepaidCode (its money onto the caller's account) and
registerByCode (a new user, at the code's access level, with the code's money).

Exactly once: both lock the code's row (SELECT … FOR UPDATE; SQLite runs one writer at a
time) before looking at what is left on it, credit the account in the same transaction,
and take the amount off the code with a guarded UPDATE (`balance >= amount`, still
active) whose row count must be 1 — so two activations racing for one code credit at most
what it holds, one account, to the cent. The first activation binds the code to its
account: what it leaves on the code may be taken later by that account only.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.auth.secrets_store import hash_password
from billing_core.checks import check_length, check_md5, invalid
from billing_core.clock import utcnow
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.accounts import create_account, create_user
from billing_core.ledger.code_money import credit_from_code
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency_or_system
from billing_core.ledger.money_rules import account_of
from billing_core.money import ZERO
from billing_core.provisioning import code_guard
from billing_core.provisioning.prepaid_codes import ACTIVE, USED, code_hash, is_expired
from billing_core.provisioning.registration import USERNAME_RE
from billing_core.provisioning.tables import prepaid_codes
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None


class _WrongCode(Exception):
    """No usable code: counted as a failure once the transaction is over."""


async def _locked_code(conn: AsyncConnection, hashed: str | None) -> Any:
    """The code's row, locked; _WrongCode when it is unknown, deleted, replaced or expired."""
    if hashed is None:
        raise _WrongCode
    query = select(prepaid_codes).where(prepaid_codes.c.code_hash == hashed).with_for_update()
    row = (await conn.execute(query)).first()
    if row is None or row.status not in (ACTIVE, USED) or (row.status == ACTIVE and is_expired(row, utcnow())):
        raise _WrongCode
    return row


async def _take(conn: AsyncConnection, row: Any, amount: Decimal, username: str, account_id: int) -> None:
    """Take `amount` off the code for `account_id` (the guarded UPDATE; see the module)."""
    left = Decimal(row.balance) - amount
    values: dict[str, Any] = {"balance": prepaid_codes.c.balance - amount, "status": USED if left == ZERO else ACTIVE}
    if row.activated_account is None:
        values |= {"activated_to": username, "activated_account": account_id, "activated_at": utcnow()}
    taken = await conn.execute(
        update(prepaid_codes)
        .where(prepaid_codes.c.id == row.id, prepaid_codes.c.status == ACTIVE, prepaid_codes.c.balance >= amount)
        .values(**values)
    )
    if taken.rowcount != 1:
        raise ApiError(ErrorCode.E_CODE_HAS_NO_BALANCE, "the code was used meanwhile")


async def activate(
    services: LedgerContext, gens: Generations, actor: UserRecord, *, code: str, amount: Decimal, peer_ip: str
) -> Decimal:
    """activatePrepaidCode: `amount` (the actor's currency; 0: all that is left) from the
    code onto the actor's account. Returns the EUR credited."""
    if amount < ZERO:
        raise invalid("amount must not be negative")
    await code_guard.refuse_if_locked(services, actor.username)
    wanted = None
    if amount > ZERO:
        wanted = (await currency_or_system(services, gens, actor.currency)).to_eur(amount)
        if wanted <= ZERO:
            raise invalid("amount is below the smallest amount (0.0001 EUR)")
    try:
        async with services.db.begin() as conn:
            row = await _locked_code(conn, code_hash(code))
            if row.target and row.target != actor.username:
                raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "this code is for another user")
            account_id = await account_of(conn, actor)
            if row.activated_account is not None and row.activated_account != account_id:
                raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "this code was activated to another account")
            left = Decimal(row.balance)
            if row.status == USED or left <= ZERO:
                raise ApiError(ErrorCode.E_CODE_HAS_NO_BALANCE)
            take = left if wanted is None else wanted
            if take > left:
                raise ApiError(ErrorCode.E_CODE_HAS_NO_BALANCE, "the code holds less than that")
            await credit_from_code(
                conn, account_id, take, code_id=row.id, creator=row.owner,
                funded=row.funded_account is not None, comment="activatePrepaidCode",
            )  # fmt: skip
            await _take(conn, row, take, actor.username, account_id)
    except _WrongCode:
        await code_guard.wrong_code(services, gens, peer_ip, actor.username)
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such prepaid code") from None
    log.info("codes.activated", code=row.id, account=account_id, amount_eur=str(take), by=actor.username)
    return take


@dataclass(frozen=True, slots=True)
class Registration:
    code: str
    register: bool  # False: check everything, change nothing
    username: str
    md5_password: str
    language: str


def _check_registration(new: Registration) -> str:
    if not new.username:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: user")
    if not USERNAME_RE.match(new.username):
        raise invalid("user must be 2..32 characters of A-Z a-z 0-9 _ . @ -")
    check_length("language", new.language, 20)
    return check_md5("web_password", new.md5_password)


async def _usable_for_registration(conn: AsyncConnection, hashed: str | None) -> Any:
    row = await _locked_code(conn, hashed)
    if row.status == USED or row.activated_account is not None:
        raise ApiError(ErrorCode.E_DATA_ABORT, "this code has been used")
    if row.target:
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "this code is for an existing user")
    return row


async def register_by_code(services: LedgerContext, gens: Generations, new: Registration, *, peer_ip: str) -> bool:
    """registerByCode: a user at exactly the code's access level (never above its creator's
    own level), managed by the code's creator, on a new account credited with all that is
    on the code. `register=False` answers what registering would, and changes nothing."""
    await code_guard.count_registration(services, gens, peer_ip)
    md5 = _check_registration(new)
    hashed = code_hash(new.code)
    try:
        async with services.db.begin() as conn:  # the checks, without writing
            row = await _usable_for_registration(conn, hashed)
    except _WrongCode:
        await code_guard.wrong_code(services, gens, peer_ip, None)
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such prepaid code") from None
    owner = await services.profiles.user_by(gens, "username", row.owner)
    if owner is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "the code's creator is gone")
    if row.accesslevel > owner.accesslevel:
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "the code grants more than its creator has")
    if await services.profiles.user_by(gens, "username", new.username) is not None:
        raise ApiError(ErrorCode.E_DATA_ABORT, "this user name is taken")
    if not new.register:
        return True
    password_hash = hash_password(md5)  # scrypt: slow, so outside the transaction
    try:
        async with services.db.begin() as conn:
            row = await _usable_for_registration(conn, hashed)
            if (await conn.execute(select(users.c.id).where(users.c.username == new.username))).first():
                raise ApiError(ErrorCode.E_DATA_ABORT, "this user name is taken")
            account_id = await create_account(conn)
            user_id = await create_user(
                conn, username=new.username, password_hash=password_hash, accesslevel=row.accesslevel,
                manager=row.owner, account_id=account_id, currency=owner.currency, language=new.language,
            )  # fmt: skip
            amount = Decimal(row.balance)
            await credit_from_code(
                conn, account_id, amount, code_id=row.id, creator=row.owner,
                funded=row.funded_account is not None, comment="registerByCode",
            )  # fmt: skip
            await _take(conn, row, amount, new.username, account_id)
    except _WrongCode:  # expired or replaced between the two transactions
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such prepaid code") from None
    except IntegrityError as exc:  # a concurrent registration took the name first
        raise ApiError(ErrorCode.E_DATA_ABORT, "this user name is taken") from exc
    log.info("codes.registered", code=row.id, user=new.username, user_id=user_id, accesslevel=row.accesslevel)
    return True
