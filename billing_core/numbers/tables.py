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
    Text,
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
    # Rent (migration 0016, billing_core.numbers.renewals): the pool it was ordered from
    # (None for addDID's numbers), whether the month renews itself, whether the owner was
    # told it could not be paid, since when it is unpaid (disabled by the maintenance
    # run), and its soft deletion (deleteDID, or released after the grace).
    Column("pool_id", Integer, nullable=True),
    Column("auto_renew", Boolean, nullable=False, server_default="1"),
    Column("renew_notify", Boolean, nullable=False, server_default="0"),
    Column("unpaid_since", DateTime(timezone=True), nullable=True),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("deleted_reason", String(16), nullable=False, server_default=""),
    Index("ix_dids_renewal", "expiration"),
)

# Pools of numbers for sale (addDIDPool): where a number comes from (`provider`, with its
# credentials encrypted by the secret box) and what it costs (system currency, before the
# buyer's tariff's did_multiplier). Soft-deleted.
did_pools = Table(
    "did_pools",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("country", String(64), nullable=False),
    Column("area", String(64), nullable=False),
    Money("cost", nullable=False, server_default="0"),
    Money("installcost", nullable=False, server_default="0"),
    Column("provider", String(32), nullable=False, server_default="local"),
    Column("user_enc", Text, nullable=False, server_default=""),
    Column("pass_enc", Text, nullable=False, server_default=""),
    Column("param1_enc", Text, nullable=False, server_default=""),
    Column("param2_enc", Text, nullable=False, server_default=""),
    Column("param3_enc", Text, nullable=False, server_default=""),
    Column("qty", Integer, nullable=False, server_default="100"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)

# The operator's own numbers (`callgate dids import`), which the `local` provider sells
# from pools of the same country and area: `available`, or `taken` by an order.
did_stock = Table(
    "did_stock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("did", String(32), nullable=False, unique=True),
    Column("country", String(64), nullable=False),
    Column("area", String(64), nullable=False),
    Column("voice_support", Boolean, nullable=False, server_default="1"),
    Column("sms_support", Boolean, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="available"),
    Column("taken_at", DateTime(timezone=True), nullable=True),
    Index("ix_did_stock_area", "country", "area", "status"),
)

# One row per orderDID: `pending` while its hold is placed and the provider asked, then
# `done` (charged, the number is the buyer's) or `failed` (hold released, nothing charged).
# A pending order left by a crash is finished by the maintenance run (renewals.py).
did_orders = Table(
    "did_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hold_uid", String(64), nullable=False, unique=True),
    Column("did", String(32), nullable=False),
    Column("pool_id", Integer, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("owner", String(32), nullable=False),
    Column("account_id", Integer, nullable=False),
    Money("amount", nullable=False),
    Column("state", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_did_orders_state", "state", "created_at"),
)

# Every rent period paid, keyed by (DID, start of the period): the month bought by
# orderDID, renewDID or the maintenance run is charged once however often it is asked.
did_periods = Table(
    "did_periods",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("did_id", Integer, nullable=False),
    Column("did", String(32), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("owner", String(32), nullable=False),
    Column("account_id", Integer, nullable=False),
    Money("amount", nullable=False),
    Column("kind", String(8), nullable=False),  # order, renew (renewDID), auto (maintenance)
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("did_id", "period_start", name="uq_did_periods_period"),
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
