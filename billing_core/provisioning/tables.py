"""The provisioning subsystem's tables (prepaid codes / invites), on the shared metadata."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, Index, Integer, String, Table

from billing_core.db.schema import Money, metadata

# A prepaid code (the spec's "invite-code (prepaid card code)"): billing_core.provisioning
# .prepaid_codes. The code itself is never stored: `code_hash` is its sha256 (a code is
# 120 random bits), `hint` its last 4 characters for listings. `balance` is what is left
# on it (EUR); `funded_account` the account its money was taken from at creation (NULL:
# a master administrator's code, a refill when activated). `activated_account` is the one
# account it credits, fixed by its first activation.
prepaid_codes = Table(
    "prepaid_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("hint", String(8), nullable=False),
    Column("owner", String(32), nullable=False),  # the creator's username
    Column("accesslevel", Integer, nullable=False),
    Money("face_value", nullable=False, server_default="0"),
    Money("balance", nullable=False, server_default="0"),
    Column("funded_account", Integer, nullable=True),
    Column("target", String(32), nullable=False, server_default=""),
    Column("signature", String(128), nullable=False, server_default=""),  # registerRequest's
    # active (may be activated or registered with), used, deleted, expired, void (replaced)
    Column("status", String(8), nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # NULL: never
    Column("activated_to", String(32), nullable=False, server_default=""),  # username
    Column("activated_account", Integer, nullable=True),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("balance >= 0", name="code_balance_not_negative"),
    Index("ix_prepaid_codes_owner", "owner"),
    Index("ix_prepaid_codes_signature", "signature"),
    Index("ix_prepaid_codes_expiry", "status", "expires_at"),
)
