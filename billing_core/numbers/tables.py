"""The numbers subsystem's tables (DIDs and rule chains), on the shared metadata."""


from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from billing_core.db.schema import Money, metadata

dids = Table(
    "dids",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("did", String(32), nullable=False, unique=True),
    Column("owner", String(32), nullable=False),
    Column("comment", String(256), nullable=False, server_default=""),
    Money("cost", nullable=False, server_default="0"),
    Column("expiration", DateTime(timezone=True), nullable=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
)


did_rules = Table(
    "did_rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("did_id", Integer, ForeignKey("dids.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),  # the spec's rule number, 1-based
    Column("source", String(32), nullable=False),
    Column("pattern", String(128), nullable=False, server_default=""),
    Column("policy", String(8), nullable=False),
    Column("sms_action", String(64), nullable=False, server_default=""),
    Column("sms_destination", String(128), nullable=False, server_default=""),
    Column("action", String(64), nullable=False, server_default=""),
    Column("server", String(128), nullable=False, server_default=""),
    Column("destination", String(128), nullable=False),
    Column("callerid", String(64), nullable=False, server_default=""),
    Column("timeout", Integer, nullable=True),
    Column("condition", String(32), nullable=False, server_default=""),
    Column("input", String(64), nullable=False, server_default=""),
    UniqueConstraint("did_id", "position", name="uq_did_rules_position"),
)

# Funds held for a call between callPrepare and callFinish (or expiry).
