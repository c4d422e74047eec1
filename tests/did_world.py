"""A world for the DID rent tests: an administrator's server key, users with passwords,
a local pool with stock, and readers of the rows money leaves behind."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.auth.secrets_store import md5_hex
from billing_core.container import Services
from billing_core.ledger.tables import reservations, transactions
from billing_core.numbers.providers import StockRow, import_stock
from billing_core.numbers.tables import did_orders, did_periods, did_stock, dids
from tests.factories import make_key


@dataclass
class DidGate:
    dispatcher: Dispatcher
    admin_key: str
    client_key: str
    passwords: dict[str, str]

    async def admin(self, method: str, **args: Any) -> Outcome:
        raw = {k: str(v) for k, v in args.items()}
        return await self.dispatcher.call(method, raw, Credentials("127.0.0.1", "http", apikey=self.admin_key))

    async def user(self, login: str, method: str, **args: Any) -> Outcome:
        raw = {"login": login, "password": md5_hex(self.passwords[login]), **{k: str(v) for k, v in args.items()}}
        return await self.dispatcher.call(method, raw, Credentials("127.0.0.1", "http", apikey=self.client_key))


async def make_gate(services: Services, dispatcher: Dispatcher, passwords: dict[str, str]) -> DidGate:
    admin_key = await make_key(services, level=95, name="portal")
    client_key = await make_key(services, level=0, name="client")
    return DidGate(dispatcher, admin_key, client_key, passwords)


def code(outcome: Outcome) -> str | None:
    return None if outcome.error is None else outcome.error.code.value


async def stock(services: Services, *numbers: str, country: str = "Germany", area: str = "Berlin") -> None:
    await import_stock(services.db, [StockRow(n, country, area, True, False) for n in numbers])


async def did_row(services: Services, did: str) -> Any:
    async with services.db.begin() as conn:
        return (await conn.execute(select(dids).where(dids.c.did == did))).first()


async def did_transactions(services: Services, account_id: int) -> list[tuple[Decimal, str]]:
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(transactions.c.amount, transactions.c.ref)
                .where(transactions.c.account_id == account_id, transactions.c.kind == "did")
                .order_by(transactions.c.id)
            )
        ).all()
    return [(Decimal(row.amount), row.ref) for row in rows]


async def periods(services: Services, did: str) -> list[Any]:
    async with services.db.begin() as conn:
        return list(
            (await conn.execute(select(did_periods).where(did_periods.c.did == did).order_by(did_periods.c.id))).all()
        )


async def open_holds(services: Services) -> int:
    async with services.db.begin() as conn:
        return len((await conn.execute(select(reservations.c.id))).all())


async def order_states(services: Services) -> list[str]:
    async with services.db.begin() as conn:
        return list((await conn.execute(select(did_orders.c.state).order_by(did_orders.c.id))).scalars())


async def stock_status(services: Services, did: str) -> str:
    async with services.db.begin() as conn:
        return str((await conn.execute(select(did_stock.c.status).where(did_stock.c.did == did))).scalar_one())


async def set_expiration(services: Services, did: str, when: Any) -> None:
    async with services.db.begin() as conn:
        await conn.execute(update(dids).where(dids.c.did == did).values(expiration=when))
    await services.cache.invalidate("profiles")
