"""cache generations shared through the database

The in-process cache (no Redis) kept its generation counters in one process, so a CLI
write (`callgate bans remove`, `keys add`, `directions import`) never reached a running
`callgate serve`. Each invalidation now also bumps a row here, and the in-process cache
polls the table (billing_core.cache.shared_generations).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_generations",
        sa.Column("namespace", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_cache_generations")),
    )


def downgrade() -> None:
    op.drop_table("cache_generations")
