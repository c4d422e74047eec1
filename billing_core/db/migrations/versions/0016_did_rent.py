"""DID rent: pools, the local provider's stock, orders, paid periods; rent columns on dids

- `dids` gains the pool it came from, auto_renew, renew_notify, unpaid_since and its soft
  deletion (deleted_at, deleted_reason), and an index on expiration for the renewal run.
- `did_pools` (addDIDPool; provider credentials encrypted), `did_stock` (the operator's
  own numbers, `callgate dids import`), `did_orders` (one per orderDID, pending → done or
  failed), `did_periods` (every rent period paid, unique per DID and period start).

Revision ID: 0016
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0013"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(precision=18, scale=4)


def upgrade() -> None:
    with op.batch_alter_table("dids", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("pool_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("auto_renew", sa.Boolean(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("renew_notify", sa.Boolean(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("unpaid_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_reason", sa.String(length=16), server_default="", nullable=False))
        batch_op.create_index("ix_dids_renewal", ["expiration"], unique=False)
    op.create_table(
        "did_pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("area", sa.String(length=64), nullable=False),
        sa.Column("cost", MONEY, server_default="0", nullable=False),
        sa.Column("installcost", MONEY, server_default="0", nullable=False),
        sa.Column("provider", sa.String(length=32), server_default="local", nullable=False),
        sa.Column("user_enc", sa.Text(), server_default="", nullable=False),
        sa.Column("pass_enc", sa.Text(), server_default="", nullable=False),
        sa.Column("param1_enc", sa.Text(), server_default="", nullable=False),
        sa.Column("param2_enc", sa.Text(), server_default="", nullable=False),
        sa.Column("param3_enc", sa.Text(), server_default="", nullable=False),
        sa.Column("qty", sa.Integer(), server_default="100", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_did_pools")),
    )
    op.create_table(
        "did_stock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("did", sa.String(length=32), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("area", sa.String(length=64), nullable=False),
        sa.Column("voice_support", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("sms_support", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="available", nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_did_stock")),
        sa.UniqueConstraint("did", name=op.f("uq_did_stock_did")),
    )
    op.create_index("ix_did_stock_area", "did_stock", ["country", "area", "status"], unique=False)
    op.create_table(
        "did_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hold_uid", sa.String(length=64), nullable=False),
        sa.Column("did", sa.String(length=32), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_did_orders")),
        sa.UniqueConstraint("hold_uid", name=op.f("uq_did_orders_hold_uid")),
    )
    op.create_index("ix_did_orders_state", "did_orders", ["state", "created_at"], unique=False)
    op.create_table(
        "did_periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("did_id", sa.Integer(), nullable=False),
        sa.Column("did", sa.String(length=32), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_did_periods")),
        sa.UniqueConstraint("did_id", "period_start", name="uq_did_periods_period"),
    )


def downgrade() -> None:
    op.drop_table("did_periods")
    op.drop_index("ix_did_orders_state", table_name="did_orders")
    op.drop_table("did_orders")
    op.drop_index("ix_did_stock_area", table_name="did_stock")
    op.drop_table("did_stock")
    op.drop_table("did_pools")
    with op.batch_alter_table("dids", schema=None) as batch_op:
        batch_op.drop_index("ix_dids_renewal")
        for name in ("deleted_reason", "deleted_at", "unpaid_since", "renew_notify", "auto_renew", "pool_id"):
            batch_op.drop_column(name)
