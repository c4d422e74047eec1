"""the operator's Asterisk servers and their sip_server names

One row per Asterisk (address, AMI host/port/user, the AMI secret Fernet-encrypted), and
the sip_server names users' SIP accounts give for it (each name belongs to one server;
stored lower-cased). `callgate migrate` registers a server `local` when the table is
empty (billing_core.asterisk.servers.ensure_local_server), not this migration: the
schema stays free of data, as for the master administrator.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asterisk_servers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=128), nullable=False),
        sa.Column("ami_host", sa.String(length=128), nullable=False),
        sa.Column("ami_port", sa.Integer(), server_default="5038", nullable=False),
        sa.Column("ami_user", sa.String(length=64), server_default="", nullable=False),
        sa.Column("ami_secret_enc", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ami_port BETWEEN 1 AND 65535", name=op.f("ck_asterisk_servers_ami_port_range")),
        sa.CheckConstraint("enabled IN (0, 1)", name=op.f("ck_asterisk_servers_enabled_flag")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asterisk_servers")),
        sa.UniqueConstraint("name", name=op.f("uq_asterisk_servers_name")),
    )
    op.create_table(
        "asterisk_sip_servers",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["asterisk_servers.id"],
            name=op.f("fk_asterisk_sip_servers_server_id_asterisk_servers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_asterisk_sip_servers")),
    )
    with op.batch_alter_table("asterisk_sip_servers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_asterisk_sip_servers_server_id"), ["server_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("asterisk_sip_servers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_asterisk_sip_servers_server_id"))
    op.drop_table("asterisk_sip_servers")
    op.drop_table("asterisk_servers")
