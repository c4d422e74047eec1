"""The numbers subsystem's tables (DIDs and rule chains, aliases), on the shared metadata."""


from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
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

# Aliases (the spec's "personal plan sets"): a number a caller dials (`alias`) that is rated
# and dialled as `destination` (billing_core.numbers.aliases). `scope` says whose calls it
# applies to, and is what makes a name unique: `ext:<sip_extension>` (that extension's
# calls), `user:<owner>` (every extension of the owner) or `global` (everybody's).
aliases = Table(
    "aliases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("alias", String(32), nullable=False),
    Column("destination", String(32), nullable=False),
    Column("owner", String(32), nullable=False),  # a username: who may change it
    Column("sip_extension", String(32), nullable=False, server_default=""),  # "" unless scope ext:
    Column("scope", String(40), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("scope", "alias", name="uq_aliases_scope_alias"),
    Index("ix_aliases_owner", "owner"),
)
