"""api_keys.key_enc: every new key also kept encrypted (authorizeRealm needs the key itself)

The key_hash column is unchanged: keys made before this revision authenticate exactly as
before. They have no ciphertext (nothing can recover a key from its hash): authorizeRealm
answers false for them until `callgate keys seal` is given the key (docs/decisions.md).

Revision ID: 0018
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("key_enc")
