"""exact money on SQLite: money columns hold scaled integers (1/10000 units)

SQLite's NUMERIC affinity kept fractional amounts as 8-byte floats, so an amount of 19
significant digits (1e14-scale + 0.0001) lost its last digits. From this revision on
billing_core.db.tables.ExactMoney writes and reads SQLite money as an INTEGER count of
0.0001 units; this converts what an existing database already holds (rounded to the
nearest 0.0001 — the float is all that is left of it). PostgreSQL keeps NUMERIC(18,4):
nothing to do there.

Revision ID: 0008
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen here (not read from tables.py): the money columns as of this revision.
MONEY_COLUMNS = (
    ("accounts", "balance"),
    ("accounts", "overdraft"),
    ("cdrs", "cost"),
    ("cdrs", "display_cost"),
    ("currencies", "transfer_fee"),
    ("currencies", "referral_reward"),
    ("dids", "cost"),
    ("reservations", "amount"),
    ("tariffs", "switch_price"),
    ("transactions", "amount"),
    ("tariff_entries", "cost"),
    ("users", "notify_balance_limit"),
)


def _convert(factor: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, column in MONEY_COLUMNS:
        if factor == "up":
            op.execute(f"UPDATE {table} SET {column} = CAST(ROUND({column} * 10000) AS INTEGER)")
        else:
            op.execute(f"UPDATE {table} SET {column} = {column} / 10000.0")


def upgrade() -> None:
    _convert("up")


def downgrade() -> None:
    _convert("down")
