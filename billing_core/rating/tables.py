"""The rating subsystem's tables (directions, routes, bill types, tariffs, entries, currencies)."""


from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from billing_core.db.schema import Money, metadata

directions = Table(
    "directions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("direction", String(128), nullable=False),
    Column("min_len", Integer, nullable=False, server_default="1"),
    Column("max_len", Integer, nullable=False, server_default="32"),
    CheckConstraint("min_len <= max_len", name="len_range"),
)


routes = Table(
    "routes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("route", String(64), nullable=False),
    Column("type", String(8), nullable=False, server_default="sip"),
    Column("sip_server", String(128), nullable=False, server_default=""),
    Column("prefix", String(64), nullable=False, server_default=""),
    Column("host", String(128), nullable=False, server_default=""),
    Column("user", String(64), nullable=False, server_default=""),
    Column("fromuser", Boolean, nullable=False, server_default="0"),
    Column("pass_enc", Text, nullable=True),
    Column("callerid", Integer, nullable=False, server_default="2"),
    Column("balance_handler", String(64), nullable=False, server_default=""),
    Column("balance_username", String(64), nullable=False, server_default=""),
    Column("balance_password_enc", Text, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("owner", String(32), nullable=False),
    Column("is_default", Boolean, nullable=False, server_default="0"),
    UniqueConstraint("owner", "route", name="uq_routes_owner_route"),  # addRoute: names unique per owner
)


bill_types = Table(
    "bill_types",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("type", String(32), nullable=False, unique=True),
    Column("free_threshold", Integer, nullable=False, server_default="0"),
    Column("step", Integer, nullable=False, server_default="60"),
    CheckConstraint("step > 0", name="step_positive"),
    CheckConstraint("free_threshold >= 0", name="free_threshold_not_negative"),
)


tariffs = Table(
    "tariffs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("table_name", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("bill_type", String(32), nullable=False, server_default="byminute"),
    Column("is_option", Boolean, nullable=False, server_default="0"),
    Column("is_public", Boolean, nullable=False, server_default="0"),
    Money("switch_price", nullable=False, server_default="0"),  # charged once, by switchRates
    Money("connect_fee", nullable=False, server_default="0"),  # callgate's own: per billed call
    Column("multiplier", Numeric(12, 6), nullable=False, server_default="1"),
    Column("did_multiplier", Numeric(12, 6), nullable=False, server_default="1"),
    Column("description", String(512), nullable=False, server_default=""),
    Column("owner", String(32), nullable=False),
    UniqueConstraint("owner", "name", name="uq_tariffs_owner_name"),  # addRates: names unique per owner
    CheckConstraint("switch_price >= 0", name="switch_price_not_negative"),
    CheckConstraint("connect_fee >= 0", name="connect_fee_not_negative"),
    CheckConstraint("multiplier >= 0", name="multiplier_not_negative"),
)


tariff_entries = Table(
    "tariff_entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tariff_id", Integer, ForeignKey("tariffs.id", ondelete="CASCADE"), nullable=False),
    Column("direction_id", Integer, ForeignKey("directions.id"), nullable=False),
    Money("cost", nullable=False),  # per minute, system currency
    Column("route_id", Integer, ForeignKey("routes.id"), nullable=False),
    Column("priority", Integer, nullable=False, server_default="1"),
    UniqueConstraint("tariff_id", "direction_id", "priority", name="uq_tariff_entries_slot"),
    CheckConstraint("cost >= 0", name="cost_not_negative"),
)

# Tariff options switched on for an extension (switchRates with state=true).


currencies = Table(
    "currencies",
    metadata,
    Column("currency", String(3), primary_key=True),
    Column("eur_course", Numeric(18, 6), nullable=False),
    Column("displayname", String(16), nullable=False, server_default=""),
    Money("transfer_fee", nullable=False, server_default="0"),
    Money("referral_reward", nullable=False, server_default="0"),
    CheckConstraint("eur_course > 0", name="course_positive"),
)
