"""soft deletes: users, SIP accounts, accounts and call-log rows hidden, never removed; revoked keys

`deleted_at` on users, sip_extensions and accounts, and on cdrs (deleteLogs hides a
user's call log; the rows, their unique (call_uid, prior) and their money stay for the
books); `revoked_at` on api_keys (revokeKey: the key never works again, its hash stays
so the same secret cannot come back). NULL = live. docs/decisions.md, "Deletes and keys".

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (("users", "deleted_at"), ("sip_extensions", "deleted_at"), ("accounts", "deleted_at"),
           ("cdrs", "deleted_at"), ("api_keys", "revoked_at"))  # fmt: skip


def upgrade() -> None:
    for table, column in COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(column, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(column)
