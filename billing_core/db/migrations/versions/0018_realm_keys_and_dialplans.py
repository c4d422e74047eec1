"""api_keys.key_enc: every new key also kept encrypted (authorizeRealm needs the key itself);
asterisk_files: the versions of each server's dialplan and interface file (updateDialplan)

The key_hash column is unchanged: keys made before this revision authenticate exactly as
before. They have no ciphertext (nothing can recover a key from its hash): authorizeRealm
answers false for them until `callgate keys seal` is given the key (docs/decisions.md).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_enc", sa.Text(), nullable=True))
    op.create_table(
        "asterisk_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("active", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('dialplan', 'interface')", name=op.f("ck_asterisk_files_file_kind")),
        sa.CheckConstraint("active IN (0, 1)", name=op.f("ck_asterisk_files_active_flag")),
        sa.ForeignKeyConstraint(
            ["server_id"], ["asterisk_servers.id"], name=op.f("fk_asterisk_files_server_id_asterisk_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asterisk_files")),
        sa.UniqueConstraint("server_id", "kind", "seq", name=op.f("uq_asterisk_files_server_id")),
    )


def downgrade() -> None:
    op.drop_table("asterisk_files")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("key_enc")
