"""The ledger subsystem's tables (accounts, holds, transactions, CDRs), on the shared metadata."""


from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from billing_core.db.schema import Money, metadata

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # the account number
    Money("balance", nullable=False, server_default="0"),
    Money("overdraft", nullable=False, server_default="0"),
    Column("refill_allowed", Integer, nullable=False, server_default="2"),
    Column("postpaid", Integer, nullable=False, server_default="0"),
    Column("billing_name", String(100), nullable=False, server_default=""),
    Column("billing_address", String(200), nullable=False, server_default=""),
    Column("billing_email", String(100), nullable=False, server_default=""),
    Column("billing_bank_account", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),  # deleteAccount (NULL = live)
    CheckConstraint("overdraft >= 0", name="overdraft_not_negative"),
)


reservations = Table(
    "reservations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("call_uid", String(64), nullable=False),
    Column("prior", Integer, nullable=False),
    # No foreign keys on the per-call tables (reservations, cdrs, transactions): each one
    # cost a row lock and a WAL record per call (migration 0004); users and accounts are
    # never deleted, and the ids come from profiles the registry resolved.
    Column("account_id", Integer, nullable=False),
    Column("user_id", Integer, nullable=False),
    Money("amount", nullable=False),
    Column("max_time_s", Integer, nullable=False),
    # open, or expired (no callFinish in time); a charged hold is deleted with its charge
    Column("state", String(8), nullable=False, server_default="open"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # The rating locked in at callPrepare (JSON, billing_core.rating.engine.Rating):
    # callFinish charges at it, so a tariff or route edit mid-call cannot overrun the hold.
    Column("rating", Text, nullable=True),
    UniqueConstraint("call_uid", "prior", name="uq_reservations_call"),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    Index("ix_reservations_open", "account_id", "state"),
    # The expiry sweep looks only at open holds; expired ones stay until a late callFinish
    # charges them, so without this it would read them all every 30 s.
    Index(
        "ix_reservations_open_expiry",
        "expires_at",
        postgresql_where=text("state = 'open'"),
        sqlite_where=text("state = 'open'"),
    ),
)

# The call log (what getLogs reads). One row per (call, priority): callFinish is idempotent.


cdrs = Table(
    "cdrs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("call_uid", String(64), nullable=False),
    Column("prior", Integer, nullable=False),
    Column("user_id", Integer, nullable=False, index=True),  # no foreign key: see reservations
    Column("account_id", Integer, nullable=False),
    Column("sip_extension", String(32), nullable=False, server_default=""),
    Column("callerid", String(64), nullable=False, server_default=""),
    Column("destination", String(64), nullable=False),
    Column("direction_id", Integer, nullable=True),
    Column("direction", String(128), nullable=False, server_default=""),
    Column("route_id", Integer, nullable=True),
    Column("route", String(64), nullable=False, server_default=""),
    Column("length_s", Integer, nullable=False),  # reported by the dialplan
    Column("answered_ms", Integer, nullable=True),
    Column("billed_s", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("cause", String(8), nullable=False, server_default=""),
    Money("cost", nullable=False),  # system currency
    Money("display_cost", nullable=False),
    Column("display_currency", String(3), nullable=False),
    Column("is_did", String(32), nullable=False, server_default=""),
    Column("answer", String(512), nullable=False),  # the text line returned, replayed on retries
    Column("created_at", DateTime(timezone=True), nullable=False),
    # deleteLogs hides the row from the call log; it stays, and so does uq_cdrs_call
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("call_uid", "prior", name="uq_cdrs_call"),
    CheckConstraint("cost >= 0", name="cost_not_negative"),
)

# Every balance change, with what caused it; balance = opening + Σ amount.


transactions = Table(
    "transactions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, nullable=False, index=True),  # no foreign key: see reservations
    Money("amount", nullable=False),
    Column("kind", String(16), nullable=False),  # call, transfer, adjust, initial
    Column("ref", String(128), nullable=False, server_default=""),
    Column("comment", String(256), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
