"""registerUser: a user, its account (or a share of one) and its SIP account, at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.asterisk.servers import check_sip_server
from billing_core.auth.secrets_store import hash_password
from billing_core.checks import check_extension_name, check_grantable_level, check_length, check_md5, invalid
from billing_core.clock import utcnow
from billing_core.directory.tables import sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.account_access import account_relation
from billing_core.ledger.accounts import create_account, create_user
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency, currency_or_system
from billing_core.ledger.money_rules import REFILL_KIND, account_of, check_cover, refills
from billing_core.ledger.transfers import available, lock_accounts, post
from billing_core.money import ZERO
from billing_core.provisioning.extensions import extension_taken
from billing_core.records import UserRecord

Generations = dict[str, int] | None

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,32}$")


def parse_account(value: str) -> int | None:
    """registerUser's `account`: 'auto' (None: create one) or an account number."""
    if value.lower() == "auto":
        return None
    if not value.isdigit() or len(value) > 9:
        raise invalid("account must be 'auto' or an account number")
    return int(value)


@dataclass(frozen=True, slots=True)
class NewUser:
    username: str
    md5_password: str
    accesslevel: int
    sip_server: str
    sip_extension: str
    sip_password: str
    balance: Decimal  # in the registering user's currency
    language: str
    currency: str
    sip_srtp: bool
    account: str  # "auto" or an account number


async def register_user(
    services: LedgerContext, gens: Generations, caller: UserRecord, manager: UserRecord, new: NewUser
) -> int:
    """registerUser: the user, its account (or a share of one) and its SIP account, at once."""
    if not USERNAME_RE.match(new.username):
        raise invalid("user must be 2..32 characters of A-Z a-z 0-9 _ . @ -")
    md5 = check_md5("web_password", new.md5_password)
    check_grantable_level(new.accesslevel, caller, manager)
    check_extension_name(new.sip_extension)
    if not new.sip_password:
        raise invalid("sip_password must not be empty")
    check_length("sip_server", new.sip_server, 128)
    check_length("language", new.language, 20)
    if new.balance < ZERO:
        raise invalid("balance must not be negative")
    user_currency = (await currency(services, gens, new.currency)).code
    # the spec: the initial balance is in the registering user's currency, whatever `currency` says
    balance_eur = (await currency_or_system(services, gens, manager.currency)).to_eur(new.balance)
    join = parse_account(new.account)
    if join is not None and balance_eur != ZERO:
        raise invalid("an initial balance needs account=auto (use transferMoney to fund a shared account)")
    password_hash = hash_password(md5)  # scrypt: slow, so outside the transaction
    sip_password_enc = services.box.encrypt(new.sip_password)
    try:
        async with services.db.begin() as conn:
            await check_sip_server(conn, new.sip_server)
            if (await conn.execute(select(users.c.id).where(users.c.username == new.username))).first():
                raise ApiError(ErrorCode.E_DATA_ABORT, "this user name is taken")
            if await extension_taken(conn, new.sip_extension):
                raise ApiError(ErrorCode.E_CANT_CREATE_ASTERISK_EXTENSION, "this SIP login is taken")
            if join is None:
                account_id = await create_account(conn)
                await _fund(conn, manager, account_id, balance_eur)
            else:
                if not (await account_relation(conn, manager, join)).controls:
                    raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "this account is not yours")
                account_id = join
            user_id = await create_user(
                conn,
                username=new.username,
                password_hash=password_hash,
                accesslevel=new.accesslevel,
                manager=manager.username,
                account_id=account_id,
                currency=user_currency,
                language=new.language,
            )
            await conn.execute(
                sip_extensions.insert().values(
                    sip_extension=new.sip_extension,
                    user_id=user_id,
                    sip_password_enc=sip_password_enc,
                    sip_server=new.sip_server,
                    sip_language=new.language,
                    sip_srtp=int(new.sip_srtp),
                    created_at=utcnow(),
                )
            )
    except IntegrityError as exc:  # a concurrent registration took the name first
        raise ApiError(ErrorCode.E_DATA_ABORT, "this user name or SIP login is taken") from exc
    return user_id


async def _fund(conn: AsyncConnection, manager: UserRecord, account_id: int, amount: Decimal) -> None:
    """registerUser's initial balance (money_rules): a master administrator's is a refill;
    anybody else's comes from its own account, as a transfer, within its cover."""
    if amount <= ZERO:
        return
    if refills(manager):
        await post(conn, account_id, amount, kind=REFILL_KIND, ref=f"refill:{manager.username}", comment="registerUser")
        return
    own = await account_of(conn, manager)
    rows = await lock_accounts(conn, own, account_id)
    if rows[own].refill_allowed == 0:
        raise ApiError(ErrorCode.E_TRANSACTIONS_LOCKED)
    left = await available(conn, rows[own]) - amount
    if left < ZERO:
        raise ApiError(ErrorCode.E_INSUFFICIENT_MONEY, "the initial balance comes from your own account")
    await check_cover(conn, manager, left, own)
    comment = "registerUser initial balance"
    await post(conn, own, -amount, kind="transfer", ref=f"to:{account_id}", comment=comment)
    await post(conn, account_id, amount, kind="transfer", ref=f"from:{own}", comment=comment)
