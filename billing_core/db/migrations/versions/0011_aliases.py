"""aliases: numbers a caller dials that are rated and dialled as another number

One row per alias (the spec's "personal plan sets"): the dialled name, its destination,
the owner who may change it and its scope (`ext:<sip_extension>`, `user:<owner>` or
`global`), unique per scope (billing_core.numbers.aliases).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("sip_extension", sa.String(length=32), server_default="", nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
        sa.UniqueConstraint("scope", "alias", name=op.f("uq_aliases_scope_alias")),
    )
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.create_index("ix_aliases_owner", ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_aliases_owner")
    op.drop_table("aliases")
