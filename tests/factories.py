"""Builders for test data, written straight to the store (provisioning through the API
is tested on its own). Every builder invalidates the cache as a registry write would."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update

from billing_core.auth.secrets_store import hash_password, md5_hex
from billing_core.cache.keys import NAMESPACES
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.directory.keys import add_key
from billing_core.directory.tables import sip_extensions, users
from billing_core.ledger.accounts import create_account, create_user
from billing_core.ledger.tables import accounts

# A test's own setup writes are not what it tests: a store that stalls for a few seconds
# (a PostgreSQL checkpoint on a shared CI host) must not fail them at the 2 s that
# decisions get (CALLGATE_DB_TIMEOUT_S).
SETUP_TIMEOUT_S = 30.0


async def make_key(
    services: Services,
    *,
    level: int,
    source: str = "127.0.0.1",
    auth_by: str = "username",
    owner: str = "admin",
    default_user: str | None = None,
    allowed_methods: str = "",
    name: str = "test",
) -> str:
    key = await add_key(
        services.db,
        services.box,
        name=name,
        access_level=level,
        source=source,
        owner=owner,
        auth_by=auth_by,
        default_user=default_user,
        allowed_methods=allowed_methods,
    )
    await services.cache.invalidate(*NAMESPACES)
    return key


@dataclass(frozen=True)
class MadeUser:
    id: int
    username: str
    account_id: int
    password: str  # clear, for tests only
    sip_extension: str | None


async def make_user(
    services: Services,
    username: str,
    *,
    balance: Decimal = Decimal("10"),
    overdraft: Decimal = Decimal("0"),
    accesslevel: int = 11,
    manager: str | None = "admin",
    password: str = "secret",
    sip_extension: str | None = None,
    sip_password: str = "sippass",
    sip_rates_id: int | None = None,
    rates_id: int | None = None,
    disa_pin: str | None = None,
    disa_trusted_cli: str = "",
    sip_callerid: str = "",
    sip_max_call_len: int = 0,
    allowed_call_len: int = 0,
    active: int = 1,
    currency: str = "EUR",
    account_id: int | None = None,
) -> MadeUser:
    async with services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
        if account_id is None:
            account_id = await create_account(conn, balance=balance)
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(overdraft=overdraft))
        user_id = await create_user(
            conn,
            username=username,
            password_hash=hash_password(md5_hex(password)),
            accesslevel=accesslevel,
            manager=manager,
            account_id=account_id,
            currency=currency,
        )
        await conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(active=active, rates_id=rates_id, allowed_call_len=allowed_call_len)
        )
        if sip_extension is not None:
            await conn.execute(
                sip_extensions.insert().values(
                    sip_extension=sip_extension,
                    user_id=user_id,
                    sip_password_enc=services.box.encrypt(sip_password),
                    sip_rates_id=sip_rates_id,
                    sip_callerid=sip_callerid,
                    sip_max_call_len=sip_max_call_len,
                    disa_pin_enc=services.box.encrypt(disa_pin) if disa_pin else None,
                    disa_trusted_cli=disa_trusted_cli,
                    created_at=utcnow(),
                )
            )
    await services.cache.invalidate(*NAMESPACES)
    return MadeUser(user_id, username, account_id, password, sip_extension)


async def balance_of(services: Services, account_id: int) -> Decimal:
    async with services.db.begin(timeout_s=SETUP_TIMEOUT_S) as conn:
        value = (await conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id))).scalar_one()
    return Decimal(value)
