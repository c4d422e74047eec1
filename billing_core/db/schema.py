"""The shared SQLAlchemy metadata every subsystem's tables module defines its tables on,
the money column type, and the store's own table (cache generations).

Money is NUMERIC(18,4) on PostgreSQL and a scaled integer (1/10000 units) on SQLite,
whose NUMERIC would keep it as a float (see `ExactMoney`). Invariants the database can
hold itself are constraints in the tables: unique call keys make callFinish idempotent,
CHECKs keep amounts sane whatever code path writes them.
"""


from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
)

from billing_core.db.money_type import ExactMoney

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def Money(name: str, **kw: object) -> Column[Decimal]:
    return Column(name, ExactMoney(), **kw)  # type: ignore[arg-type]


cache_generations = Table(
    "cache_generations",
    metadata,
    Column("namespace", String(32), primary_key=True),
    Column("generation", BigInteger, nullable=False, server_default="0"),
)
