"""Asterisk servers: `callgate asterisk add|list|remove`, the sip_server check of the
provisioning methods, and the server `local` that `callgate migrate` registers.

A sip_server value that users' SIP accounts give (registerUser, createExtension,
updateExtension) must be a name of a registered server, else E_SIP_SERVER_NOT_EXIST
(the spec's code). Names compare without case (they are host names or addresses). An
empty value names no server and stays accepted: createExtension's sip_server is optional.
The check reads the table directly: provisioning is rare, and a CLI change must count at
once in every process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.asterisk.tables import asterisk_servers, asterisk_sip_servers
from billing_core.auth.secrets_store import SecretBox
from billing_core.checks import invalid, missing
from billing_core.clock import utcnow
from billing_core.db.engine import Database
from billing_core.directory.tables import sip_extensions
from billing_core.errors import ApiError, ErrorCode

log = structlog.get_logger(__name__)

LOCAL_SERVER = "local"
LOCAL_ADDRESS = "127.0.0.1"
# What a single-box install's SIP accounts name: the demo data and the README walkthrough
# register users with sip_server=127.0.0.1.
LOCAL_SIP_SERVERS = ("127.0.0.1", "localhost")
DEFAULT_AMI_PORT = 5038

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,128}")
_AMI_USER = re.compile(r"[^\s\x00-\x1f\x7f]{0,64}")  # manager.conf's [section] name


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What `callgate asterisk add` writes. `ami_secret` None on a replace keeps the stored one."""

    name: str
    address: str
    ami_host: str
    ami_port: int
    ami_user: str
    ami_secret: str | None
    sip_servers: tuple[str, ...]
    enabled: bool = True

    def validated(self) -> ServerSpec:
        if not self.name:
            raise missing("name")
        if not _NAME.fullmatch(self.name):
            raise invalid("name must be 1..64 letters, digits, '_', '.', '-'")
        for label, value in (("address", self.address), ("ami_host", self.ami_host)):
            if not _HOST.fullmatch(value):
                raise invalid(f"{label} must be a host name or address")
        if not 1 <= self.ami_port <= 65535:
            raise invalid("ami_port must be between 1 and 65535")
        if not _AMI_USER.fullmatch(self.ami_user):
            raise invalid("ami_user must be up to 64 characters without blanks")
        if self.ami_secret is not None and re.search(r"[\r\n]", self.ami_secret):
            raise invalid("ami_secret must be one line")  # it travels as an AMI header
        names = sip_server_names(self.sip_servers)
        if not names:
            raise missing("sip_server")
        return ServerSpec(
            self.name, self.address, self.ami_host, self.ami_port, self.ami_user, self.ami_secret, names, self.enabled
        )


@dataclass(frozen=True, slots=True)
class AmiTarget:
    """An enabled server with AMI credentials: what the AMI service connects to. Two
    targets compare equal when a connection made for one serves the other."""

    name: str
    host: str
    port: int
    user: str
    secret: str
    sip_servers: tuple[str, ...]


def sip_server_names(values: Iterable[str]) -> tuple[str, ...]:
    """Comma-separated or repeated names, lower-cased, checked, without duplicates."""
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if not _HOST.fullmatch(name):
                raise invalid("a sip_server name must be a host name or address (up to 128 characters)")
            if name not in names:
                names.append(name)
    return tuple(names)


async def check_sip_server(conn: AsyncConnection, sip_server: str | None) -> None:
    """E_SIP_SERVER_NOT_EXIST unless `sip_server` is empty or a registered server's name."""
    if sip_server and await server_of(conn, sip_server) is None:
        raise ApiError(ErrorCode.E_SIP_SERVER_NOT_EXIST, f"no Asterisk server is named {sip_server[:128]!r}")


async def server_of(conn: AsyncConnection, sip_server: str) -> str | None:
    """The name of the server a sip_server value names, or None."""
    query = (
        select(asterisk_servers.c.name)
        .join(asterisk_sip_servers, asterisk_sip_servers.c.server_id == asterisk_servers.c.id)
        .where(asterisk_sip_servers.c.name == sip_server.strip().lower())
    )
    return (await conn.execute(query)).scalar()


async def add_server(db: Database, box: SecretBox, spec: ServerSpec, *, replace: bool = False) -> None:
    """Register a server (or, with `replace`, overwrite the one of that name)."""
    spec = spec.validated()
    values: dict[str, Any] = {
        "address": spec.address,
        "ami_host": spec.ami_host,
        "ami_port": spec.ami_port,
        "ami_user": spec.ami_user,
        "enabled": int(spec.enabled),
    }
    if spec.ami_secret is not None:
        values["ami_secret_enc"] = box.encrypt(spec.ami_secret) if spec.ami_secret else None
    try:
        async with db.begin() as conn:
            found = (await conn.execute(select(asterisk_servers).where(asterisk_servers.c.name == spec.name))).first()
            if found is not None and not replace:
                raise ApiError(ErrorCode.E_DATA_ABORT, f"server {spec.name!r} exists (--replace overwrites it)")
            if found is None and replace:
                raise ApiError(ErrorCode.E_NOT_EXIST, f"no server {spec.name!r} to replace")
            secret_enc = values.get("ami_secret_enc", found.ami_secret_enc if found is not None else None)
            if spec.ami_user and not secret_enc:
                raise missing("ami_secret")  # manager.conf has no user without a secret
            if found is None:
                result = await conn.execute(
                    asterisk_servers.insert().values(name=spec.name, created_at=utcnow(), **values)
                )
                server_id = _new_id(result)
            else:
                server_id = found.id
                await conn.execute(update(asterisk_servers).where(asterisk_servers.c.id == server_id).values(**values))
                await conn.execute(delete(asterisk_sip_servers).where(asterisk_sip_servers.c.server_id == server_id))
            await _claim_names(conn, server_id, spec.sip_servers)
    except IntegrityError as exc:  # a concurrent add took the name first
        raise ApiError(ErrorCode.E_DATA_ABORT, "this server or sip_server name is taken") from exc
    log.info("asterisk.server_saved", server=spec.name, sip_servers=list(spec.sip_servers), replaced=replace)


async def _claim_names(conn: AsyncConnection, server_id: int, names: Sequence[str]) -> None:
    taken = await conn.execute(
        select(asterisk_sip_servers.c.name, asterisk_servers.c.name.label("server"))
        .join(asterisk_servers, asterisk_servers.c.id == asterisk_sip_servers.c.server_id)
        .where(asterisk_sip_servers.c.name.in_(names), asterisk_sip_servers.c.server_id != server_id)
    )
    for row in taken:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"sip_server {row.name!r} belongs to server {row.server!r}")
    for name in names:
        await conn.execute(asterisk_sip_servers.insert().values(name=name, server_id=server_id))


async def remove_server(db: Database, name: str) -> int:
    """Remove a server and its names; the number of SIP accounts that still name it (they
    keep their sip_server text; a new account can no longer give it)."""
    async with db.begin() as conn:
        found = (await conn.execute(select(asterisk_servers.c.id).where(asterisk_servers.c.name == name))).first()
        if found is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, f"no server {name!r}")
        names = list(
            (
                await conn.execute(
                    select(asterisk_sip_servers.c.name).where(asterisk_sip_servers.c.server_id == found.id)
                )
            ).scalars()
        )
        still_named = 0
        if names:
            count = select(func.count()).where(func.lower(sip_extensions.c.sip_server).in_(names))
            still_named = int((await conn.execute(count)).scalar_one())
        await conn.execute(delete(asterisk_sip_servers).where(asterisk_sip_servers.c.server_id == found.id))
        await conn.execute(delete(asterisk_servers).where(asterisk_servers.c.id == found.id))
    log.info("asterisk.server_removed", server=name, extensions_naming_it=still_named)
    return still_named


async def list_servers(db: Database) -> list[dict[str, Any]]:
    """Every server, its names and whether an AMI secret is stored; never the secret."""
    async with db.begin() as conn:
        rows = (await conn.execute(select(asterisk_servers).order_by(asterisk_servers.c.name))).all()
        names = await _names_by_server(conn)
    return [
        {
            "name": row.name,
            "address": row.address,
            "ami_host": row.ami_host,
            "ami_port": row.ami_port,
            "ami_user": row.ami_user,
            "ami_secret": "set" if row.ami_secret_enc else "",
            "sip_servers": names.get(row.id, []),
            "enabled": bool(row.enabled),
        }
        for row in rows
    ]


async def ami_targets(db: Database, box: SecretBox) -> list[AmiTarget]:
    """The enabled servers with an AMI user, secrets decrypted (for the AMI service only)."""
    async with db.begin() as conn:
        query = select(asterisk_servers).where(asterisk_servers.c.enabled == 1, asterisk_servers.c.ami_user != "")
        rows = (await conn.execute(query.order_by(asterisk_servers.c.name))).all()
        names = await _names_by_server(conn)
    return [
        AmiTarget(row.name, row.ami_host, row.ami_port, row.ami_user, box.decrypt(row.ami_secret_enc),
                  tuple(names.get(row.id, [])))
        for row in rows
    ]  # fmt: skip


def _new_id(result: Any) -> int:
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


async def _names_by_server(conn: AsyncConnection) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    query = select(asterisk_sip_servers).order_by(asterisk_sip_servers.c.name)
    for row in await conn.execute(query):
        out.setdefault(row.server_id, []).append(row.name)
    return out


async def ensure_local_server(conn: AsyncConnection) -> bool:
    """`callgate migrate`: with no server at all, register `local` (127.0.0.1, no AMI user),
    named by 127.0.0.1, localhost and whatever the existing SIP accounts already give, so
    that a single-box install keeps provisioning as before. True when it was created."""
    if (await conn.execute(select(asterisk_servers.c.id).limit(1))).first() is not None:
        return False
    result = await conn.execute(
        asterisk_servers.insert().values(
            name=LOCAL_SERVER, address=LOCAL_ADDRESS, ami_host=LOCAL_ADDRESS, ami_port=DEFAULT_AMI_PORT,
            ami_user="", ami_secret_enc=None, enabled=1, created_at=utcnow(),
        )
    )  # fmt: skip
    server_id = _new_id(result)
    given = (await conn.execute(select(sip_extensions.c.sip_server).distinct())).scalars()
    valid = [name for name in given if name and _HOST.fullmatch(name.strip())]
    for name in sip_server_names([*LOCAL_SIP_SERVERS, *valid]):
        await conn.execute(asterisk_sip_servers.insert().values(name=name, server_id=server_id))
    log.info("bootstrap.asterisk_local_created", server=LOCAL_SERVER)
    return True
