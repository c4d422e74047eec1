"""The operator's Asterisk servers, on the shared metadata (billing_core.db.schema).

A server is one Asterisk: where it is (`address`), how callgate reaches its manager
interface (AMI host, port, user and secret; the secret encrypted with the service's
SecretBox, like SIP passwords, because callgate must send it back at login), and the
`sip_server` names that users' SIP accounts give for it (registerUser, createExtension,
updateExtension). A name belongs to one server only, so a SIP account leads to one
Asterisk.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Integer, String, Table, Text, UniqueConstraint

from billing_core.db.schema import metadata

asterisk_servers = Table(
    "asterisk_servers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("address", String(128), nullable=False),
    Column("ami_host", String(128), nullable=False),
    Column("ami_port", Integer, nullable=False, server_default="5038"),
    # empty: no AMI for this server (what `callgate migrate` registers for `local`)
    Column("ami_user", String(64), nullable=False, server_default=""),
    Column("ami_secret_enc", Text, nullable=True),  # Fernet-encrypted
    Column("enabled", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("ami_port BETWEEN 1 AND 65535", name="ami_port_range"),
    CheckConstraint("enabled IN (0, 1)", name="enabled_flag"),
)

# The sip_server names of each server, lower-cased (host names compare without case).
asterisk_sip_servers = Table(
    "asterisk_sip_servers",
    metadata,
    Column("name", String(128), primary_key=True),
    Column(
        "server_id", Integer, ForeignKey("asterisk_servers.id", ondelete="CASCADE"), nullable=False, index=True
    ),
)

# Versions of the files callgate deploys to a server (updateDialplan, updateInterface): every
# version is kept (restoreDialplan goes back to the one before); `active` marks the one
# `callgate dialplan export` gives the server. Nothing is deleted.
asterisk_files = Table(
    "asterisk_files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("asterisk_servers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # dialplan | interface
    Column("seq", Integer, nullable=False),  # 1, 2, ... per (server, kind)
    Column("version", String(32), nullable=False),  # what the answer says: 0003R20261202_170955
    Column("url", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", Text, nullable=False),
    Column("active", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("server_id", "kind", "seq"),
    CheckConstraint("kind IN ('dialplan', 'interface')", name="file_kind"),
    CheckConstraint("active IN (0, 1)", name="active_flag"),
)
