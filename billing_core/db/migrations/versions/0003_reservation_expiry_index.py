"""index for the reservation expiry sweep

The sweep (every 30 s) updates open holds past `expires_at`. Reservations are never
deleted, so without an index on the open ones it read the whole table each time.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_reservations_open_expiry",
        "reservations",
        ["expires_at"],
        postgresql_where=sa.text("state = 'open'"),
        sqlite_where=sa.text("state = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_open_expiry", table_name="reservations")
