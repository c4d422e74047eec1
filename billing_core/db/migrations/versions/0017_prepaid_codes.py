"""prepaid_codes: invite-codes / prepaid card codes, stored hashed

One row per code (billing_core.provisioning.prepaid_codes): its sha256 and a 4-character
hint, the creator, the access level a registration by it gets, what is left on it (EUR),
the account its money came from (NULL for a master administrator's code: a refill), its
target, registerRequest's signature, its status and expiry, and the one account it credits.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prepaid_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=8), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("accesslevel", sa.Integer(), nullable=False),
        sa.Column("face_value", sa.Numeric(precision=18, scale=4), server_default="0", nullable=False),
        sa.Column("balance", sa.Numeric(precision=18, scale=4), server_default="0", nullable=False),
        sa.Column("funded_account", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=32), server_default="", nullable=False),
        sa.Column("signature", sa.String(length=128), server_default="", nullable=False),
        sa.Column("status", sa.String(length=8), server_default="active", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_to", sa.String(length=32), server_default="", nullable=False),
        sa.Column("activated_account", sa.Integer(), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_prepaid_codes_code_balance_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prepaid_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_prepaid_codes_code_hash")),
    )
    with op.batch_alter_table("prepaid_codes", schema=None) as batch_op:
        batch_op.create_index("ix_prepaid_codes_owner", ["owner"], unique=False)
        batch_op.create_index("ix_prepaid_codes_signature", ["signature"], unique=False)
        batch_op.create_index("ix_prepaid_codes_expiry", ["status", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prepaid_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_prepaid_codes_expiry")
        batch_op.drop_index("ix_prepaid_codes_signature")
        batch_op.drop_index("ix_prepaid_codes_owner")
    op.drop_table("prepaid_codes")
