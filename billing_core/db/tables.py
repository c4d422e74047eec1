"""The schema: one SQLAlchemy Core table per spec concept.

Names follow the spec (direction, rates/tariff, bill type, extension, DID rule).
Money is NUMERIC(18,4) on PostgreSQL and a scaled integer (1/10000 units) on SQLite,
whose NUMERIC would keep it as a float (see `ExactMoney`). Invariants the database can hold
itself are constraints here: unique call keys make callFinish idempotent, CHECKs keep
amounts sane whatever code path writes them.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from billing_core.db.money_type import ExactMoney

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def Money(name: str, **kw: object) -> Column[Decimal]:
    return Column(name, ExactMoney(), **kw)  # type: ignore[arg-type]


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
    CheckConstraint("overdraft >= 0", name="overdraft_not_negative"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    # scrypt of the md5 the client sends; never the password itself
    Column("password_hash", String(200), nullable=True),
    Column("manager", String(32), nullable=True, index=True),  # owner's username
    Column("accesslevel", Integer, nullable=False, server_default="11"),
    Column("active", Integer, nullable=False, server_default="1"),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False, server_default="EUR"),
    Column("language", String(20), nullable=False, server_default="en"),
    Column("timezone", Numeric(5, 2), nullable=False, server_default="0"),
    Column("allowed_rates", String(20), nullable=False, server_default=""),
    Column("allowed_call_len", Integer, nullable=False, server_default="0"),  # 0 = no limit
    Column("rates_id", Integer, nullable=True),  # the user's default tariff
    Column("callerid", String(32), nullable=False, server_default=""),
    Column("notify_email", String(256), nullable=False, server_default=""),
    Column("notify_balance", Integer, nullable=False, server_default="0"),
    Money("notify_balance_limit", nullable=False, server_default="0"),
    Column("notify_did", Integer, nullable=False, server_default="-1"),
    Column("notify_ticket", Integer, nullable=False, server_default="0"),
    Column("invites", Integer, nullable=False, server_default="0"),
    Column("comment", String(1024), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

sip_extensions = Table(
    "sip_extensions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sip_extension", String(32), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("sip_password_enc", Text, nullable=False),  # Fernet-encrypted
    Column("sip_server", String(128), nullable=False, server_default=""),
    Column("sip_address", String(128), nullable=False, server_default=""),
    Column("sip_callerid", String(32), nullable=False, server_default=""),
    Column("sip_language", String(20), nullable=False, server_default="en"),
    Column("sip_rates_id", Integer, nullable=True),
    Column("sip_srtp", Integer, nullable=False, server_default="0"),
    Column("sip_transport", String(20), nullable=False, server_default="udp"),
    Column("sip_max_call_len", Integer, nullable=False, server_default="0"),  # 0 = no limit
    Column("sip_reach", Integer, nullable=False, server_default="2"),
    Column("sip_redirect", String(64), nullable=False, server_default=""),
    Column("sip_force_callback", Integer, nullable=False, server_default="0"),
    Column("sip_realm", String(16), nullable=False, server_default=""),
    Column("sip_pitch_shift", Integer, nullable=False, server_default="-1"),
    Column("sip_host", String(32), nullable=False, server_default=""),
    Column("sip_options", String(128), nullable=False, server_default=""),
    Column("disa_pin_enc", Text, nullable=True),  # Fernet-encrypted
    Column("disa_trusted_cli", String(32), nullable=False, server_default="", index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

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
extension_options = Table(
    "extension_options",
    metadata,
    Column("extension_id", Integer, ForeignKey("sip_extensions.id", ondelete="CASCADE"), primary_key=True),
    Column("tariff_id", Integer, ForeignKey("tariffs.id", ondelete="CASCADE"), primary_key=True),
)

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

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    Column("key_hint", String(8), nullable=False),  # first characters, for listings
    Column("auth_by", String(32), nullable=False, server_default="username"),
    Column("source", String(512), nullable=False),  # comma-separated IP masks
    Column("access_level", Integer, nullable=False, server_default="0"),
    Column("default_user", String(64), nullable=True),
    Column("allowed_methods", String(2048), nullable=False, server_default=""),
    Column("secure_only", Integer, nullable=False, server_default="0"),
    Column("enabled", Integer, nullable=False, server_default="1"),
    Column("owner", String(32), nullable=False),
    Column("dnsname", String(128), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

bans = Table(
    "bans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ip", String(64), nullable=False, unique=True),
    Column("source", String(32), nullable=False, server_default="auto"),  # auto, manual, whitelist
    Column("reason", String(256), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # NULL = indefinite
)

# One row per cache namespace, bumped on every invalidation: how the in-process cache of
# `callgate serve` hears of a write made by another process (billing_core.cache.shared_generations).
cache_generations = Table(
    "cache_generations",
    metadata,
    Column("namespace", String(32), primary_key=True),
    Column("generation", BigInteger, nullable=False, server_default="0"),
)

disa_failures = Table(
    "disa_failures",
    metadata,
    Column("callerid", String(64), primary_key=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

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
    # The rating locked in at callPrepare (JSON, billing_core.services.rating.Rating):
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
