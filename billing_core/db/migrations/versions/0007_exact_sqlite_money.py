"""exact money on SQLite (scaled integers, 1/10000 units); tariffs.connect_fee

SQLite's NUMERIC affinity kept fractional amounts as 8-byte floats, so an amount of 19
significant digits (1e14-scale + 0.0001) lost its last digits. From this revision on
billing_core.db.tables.ExactMoney writes and reads SQLite money as an INTEGER count of
0.0001 units; this converts what an existing database already holds (rounded to the
nearest 0.0001 — the float is all that is left of it). PostgreSQL keeps NUMERIC(18,4):
nothing to do there.

It also adds `tariffs.connect_fee` (callgate's own, default 0): the per-call connection
fee, now that the spec's `switch_price` is charged once, by switchRates, and no longer on
every call (docs/billing.md).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
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
    op.add_column("tariffs", sa.Column("connect_fee", sa.Numeric(18, 4), server_default="0", nullable=False))
    if op.get_bind().dialect.name != "sqlite":  # SQLite cannot add a CHECK to a table in place
        op.create_check_constraint("ck_tariffs_connect_fee_not_negative", "tariffs", "connect_fee >= 0")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("ck_tariffs_connect_fee_not_negative", "tariffs", type_="check")
    with op.batch_alter_table("tariffs") as batch:
        batch.drop_column("connect_fee")
    _convert("down")
