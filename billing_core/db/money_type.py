"""ExactMoney: the column type of every amount (billing_core.db.schema.Money)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from billing_core.money import MONEY_QUANT, quantize_money

MONEY_SCALE = 10000  # SQLite stores money in 1/10000 units: 0.0001 EUR is 1


class _ScaledOnSqlite(Numeric[Decimal]):
    """The SQLite side of ExactMoney: still declared NUMERIC(18,4) (the migrated schema
    is unchanged; NUMERIC affinity keeps an integer an integer), but values pass through
    untouched — Numeric's own SQLite processing goes through a float."""

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class ExactMoney(TypeDecorator[Decimal]):
    """Money as an exact Decimal on every backend.

    PostgreSQL: NUMERIC(18,4), untouched. SQLite: an integer of 1/10000 units, because
    SQLite's NUMERIC affinity stores anything that is not a whole number as an 8-byte
    float (15-16 significant digits: 1e14 + 0.0001 loses the 0.0001). Integers stay
    exact in SQLite arithmetic too: SUM, `balance + :amount` and comparisons on these
    columns work on the scaled values, and the bound operand is scaled by this type.
    """

    impl = Numeric(18, 4, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_ScaledOnSqlite(18, 4))
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        if isinstance(value, float):
            raise TypeError("money must not be a float")
        return int(quantize_money(Decimal(value)) * MONEY_SCALE)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name != "sqlite":
            return Decimal(value)
        return (Decimal(int(value)) / MONEY_SCALE).quantize(MONEY_QUANT)
