"""bans per source: one row per (source, ip), so that each Asterisk server keeps its own
bans and `whitelist` rows sit beside them (getBans, banIP, flushBans; issue 12)

`source` was `auto`/`manual`/`whitelist` with one row per address; callgate's own bans
(a bad key, wrong passwords over HTTP) keep `auto`, the CLI's keep `manual`, and banIP
adds rows of an Asterisk server's name or `whitelist`.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bans") as batch:
        batch.drop_constraint("uq_bans_ip", type_="unique")
        batch.alter_column("source", type_=sa.String(64))
        batch.create_unique_constraint("uq_bans_source", ["source", "ip"])


def downgrade() -> None:
    op.execute("DELETE FROM bans WHERE id NOT IN (SELECT MIN(id) FROM bans GROUP BY ip)")
    with op.batch_alter_table("bans") as batch:
        batch.drop_constraint("uq_bans_source", type_="unique")
        batch.alter_column("source", type_=sa.String(32))
        batch.create_unique_constraint("uq_bans_ip", ["ip"])
