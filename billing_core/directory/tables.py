"""The directory subsystem's tables (users, SIP extensions, options, API keys, bans, lock-outs)."""


from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from billing_core.db.schema import Money, metadata

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
    # deleteUser: hidden from every read and from login, kept for the books (NULL = live)
    Column("deleted_at", DateTime(timezone=True), nullable=True),
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
    # deleteExtension / deleteUser: hidden, its name stays taken (NULL = live)
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)


extension_options = Table(
    "extension_options",
    metadata,
    Column("extension_id", Integer, ForeignKey("sip_extensions.id", ondelete="CASCADE"), primary_key=True),
    Column("tariff_id", Integer, ForeignKey("tariffs.id", ondelete="CASCADE"), primary_key=True),
)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    # the key Fernet-encrypted, for authorizeRealm's MD5 (which needs the key itself); NULL for
    # a key made before migration 0018 until `callgate keys seal` gives it (docs/decisions.md)
    Column("key_enc", Text, nullable=True),
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
    # revokeKey: never works again, hidden from getKey/getKeys; the hash stays taken
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


bans = Table(
    "bans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ip", String(64), nullable=False),
    # auto (callgate's own lock-outs), manual (the CLI), an Asterisk server's name, whitelist
    Column("source", String(64), nullable=False, server_default="auto"),
    Column("reason", String(256), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # NULL = indefinite
    UniqueConstraint("source", "ip"),
)

# One row per cache namespace, bumped on every invalidation: how the in-process cache of
# `callgate serve` hears of a write made by another process (billing_core.cache.shared_generations).


disa_failures = Table(
    "disa_failures",
    metadata,
    Column("callerid", String(64), primary_key=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
