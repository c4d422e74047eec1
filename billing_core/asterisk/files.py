"""updateDialplan, restoreDialplan, updateInterface: versioned files per server.

A file is fetched from a URL (the spec's form: `/` written `~`), only one under a prefix
the operator configured (`CALLGATE_DIALPLAN_URL_PREFIXES`, billing_core.config): never an
arbitrary URL. A URL without a scheme (the spec's example `url=localhost-dialplan`) is a
name under the first prefix. No redirect is followed, at most MAX_BYTES are read, within
FETCH_TIMEOUT_S. The content must be UTF-8 text without NUL and without `#exec`
(Asterisk would run that line as a command on its host).

Every version is kept in `asterisk_files`, numbered per (server, kind), and one is active:
the one `callgate dialplan export --server NAME` prints. The Asterisk includes it with
`#exec callgate dialplan export --server NAME` (asterisk.conf `execincludes = yes`), so the
AMI `Reload` of pbx_config that updateDialplan and restoreDialplan send (never a `Command`)
is the moment the new version takes effect. A reload that fails puts the previous version
back as active (E_ASTERISK_QUERY_ERROR); the fetched version stays on record. What each
does to live calls: nothing; a dialplan reload changes where new calls and the next
priorities go, and channels keep running (docs/ami.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.asterisk.connection import State
from billing_core.asterisk.errors import AsteriskUnavailable
from billing_core.asterisk.service import AmiService
from billing_core.asterisk.tables import asterisk_files, asterisk_servers
from billing_core.clock import utcnow
from billing_core.db.engine import Database
from billing_core.errors import ApiError, ErrorCode

log = structlog.get_logger(__name__)

DIALPLAN, INTERFACE = "dialplan", "interface"
DIALPLAN_MODULE = "pbx_config.so"
MAX_BYTES = 1 << 20
FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FileVersion:
    id: int
    server: str
    kind: str
    seq: int
    version: str
    content: str


def version_label(seq: int, at: datetime) -> str:
    """`0003R20261202_170955`: the number, then when it was fetched (the spec's example
    answers `OK 0082R20170626_205`)."""
    return f"{seq:04d}R{at:%Y%m%d_%H%M%S}"


def resolve_url(raw: str, prefixes: tuple[str, ...]) -> str:
    """The spec's url (`~` for `/`) as a URL under one of `prefixes`, or E_INSUFFICIENT_ACCESS."""
    if not prefixes:
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "no URL is allowed: CALLGATE_DIALPLAN_URL_PREFIXES is empty")
    url = raw.strip().replace("~", "/")
    if "://" not in url:
        url = prefixes[0] + url.lstrip("/")
    parts = urlsplit(url)
    refused = ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "this URL is not under an allowed prefix")
    if any(c in url for c in "\\%@ \t\r\n") or parts.fragment or parts.query:
        raise refused
    if {".", ".."} & set(parts.path.split("/")):
        raise refused
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (parts.scheme, parts.netloc.lower()) == (p.scheme, p.netloc.lower()) and parts.path.startswith(p.path):
            return url
    raise refused


async def fetch(url: str) -> str:
    """The text at `url` (already allowed), or E_DATA_ABORT."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    status = response.status
                    raise ApiError(ErrorCode.E_DATA_ABORT, f"the URL answered HTTP {status} (no redirect is followed)")
                body = b""
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_BYTES:
                        break
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"the URL could not be fetched: {type(exc).__name__}") from None
    if len(body) > MAX_BYTES:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"the file is larger than {MAX_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(ErrorCode.E_DATA_ABORT, "the file is not UTF-8 text") from None
    check_content(text)
    return text


def check_content(text: str) -> None:
    if not text.strip() or "\x00" in text:
        raise ApiError(ErrorCode.E_DATA_ABORT, "the file is empty or not text")
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().lower().startswith("#exec"):
            raise ApiError(ErrorCode.E_DATA_ABORT, f"line {number}: #exec would run a command on the Asterisk host")


async def _server_id(conn: AsyncConnection, server: str) -> int:
    found = (await conn.execute(select(asterisk_servers.c.id).where(asterisk_servers.c.name == server))).scalar()
    if found is None:
        raise ApiError(ErrorCode.E_SIP_SERVER_NOT_EXIST, "no such Asterisk server")
    return int(found)


async def _active(conn: AsyncConnection, server_id: int, kind: str) -> int | None:
    query = select(asterisk_files.c.id).where(
        asterisk_files.c.server_id == server_id, asterisk_files.c.kind == kind, asterisk_files.c.active == 1
    )
    found = (await conn.execute(query)).scalar()
    return None if found is None else int(found)


async def _activate(conn: AsyncConnection, server_id: int, kind: str, file_id: int | None) -> None:
    scope = (asterisk_files.c.server_id == server_id) & (asterisk_files.c.kind == kind)
    await conn.execute(update(asterisk_files).where(scope, asterisk_files.c.active == 1).values(active=0))
    if file_id is not None:
        await conn.execute(update(asterisk_files).where(asterisk_files.c.id == file_id)
                           .values(active=1, activated_at=utcnow()))  # fmt: skip


async def _row(conn: AsyncConnection, file_id: int, server: str) -> FileVersion:
    r = (await conn.execute(select(asterisk_files).where(asterisk_files.c.id == file_id))).one()
    return FileVersion(r.id, server, r.kind, r.seq, r.version, r.content)


def require_up(ami: AmiService, server: str) -> None:
    conn = ami.connection(server)
    if conn.state is not State.UP:
        raise AsteriskUnavailable(server, conn.last_error)


async def reload_dialplan(ami: AmiService, db: Database, server: str, server_id: int, previous: int | None) -> None:
    """The AMI Reload of pbx_config; when it fails, `previous` is active again."""
    try:
        await ami.action(server, "Reload", {"Module": DIALPLAN_MODULE})
    except ApiError:
        async with db.begin() as conn:
            await _activate(conn, server_id, DIALPLAN, previous)
        raise


async def update_file(
    ami: AmiService, db: Database, server: str, kind: str, raw_url: str, prefixes: tuple[str, ...]
) -> FileVersion:
    url = resolve_url(raw_url, prefixes)
    if kind == DIALPLAN:
        require_up(ami, server)  # before anything is fetched or stored
    content = await fetch(url)
    now = utcnow()
    async with db.begin() as conn:
        server_id = await _server_id(conn, server)
        previous = await _active(conn, server_id, kind)
        last = (await conn.execute(select(func.max(asterisk_files.c.seq)).where(
            asterisk_files.c.server_id == server_id, asterisk_files.c.kind == kind))).scalar()  # fmt: skip
        seq = int(last or 0) + 1
        result = await conn.execute(asterisk_files.insert().values(
            server_id=server_id, kind=kind, seq=seq, version=version_label(seq, now), url=url[:1024],
            sha256=hashlib.sha256(content.encode()).hexdigest(), content=content, active=0, created_at=now,
        ))  # fmt: skip
        key = result.inserted_primary_key
        assert key is not None
        file_id = int(key[0])
        await _activate(conn, server_id, kind, file_id)
        made = await _row(conn, file_id, server)
    if kind == DIALPLAN:
        await reload_dialplan(ami, db, server, server_id, previous)
    log.info("asterisk.file_updated", server=server, kind=kind, version=made.version, url=url)
    return made


async def restore_dialplan(ami: AmiService, db: Database, server: str) -> FileVersion:
    """The version before the active one becomes active again (repeat to go further back)."""
    require_up(ami, server)
    async with db.begin() as conn:
        server_id = await _server_id(conn, server)
        current = await _active(conn, server_id, DIALPLAN)
        if current is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "this server has no dialplan version to restore from")
        seq = (await conn.execute(select(asterisk_files.c.seq).where(asterisk_files.c.id == current))).scalar_one()
        query = (
            select(asterisk_files.c.id)
            .where(asterisk_files.c.server_id == server_id, asterisk_files.c.kind == DIALPLAN,
                   asterisk_files.c.seq < seq)
            .order_by(asterisk_files.c.seq.desc())
            .limit(1)
        )  # fmt: skip
        earlier = (await conn.execute(query)).scalar()
        if earlier is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no dialplan version before the active one")
        await _activate(conn, server_id, DIALPLAN, int(earlier))
        restored = await _row(conn, int(earlier), server)
    await reload_dialplan(ami, db, server, server_id, current)
    log.info("asterisk.dialplan_restored", server=server, version=restored.version)
    return restored


async def last_changed_server(db: Database) -> str:
    """restoreDialplan without `asterisk`: the server whose dialplan changed last."""
    query = (
        select(asterisk_servers.c.name)
        .join(asterisk_files, asterisk_files.c.server_id == asterisk_servers.c.id)
        .where(asterisk_files.c.kind == DIALPLAN, asterisk_files.c.activated_at.is_not(None))
        .order_by(asterisk_files.c.activated_at.desc(), asterisk_files.c.id.desc())
        .limit(1)
    )
    async with db.begin() as conn:
        name = (await conn.execute(query)).scalar()
    if name is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no server has a dialplan version")
    return str(name)


async def active_file(db: Database, server: str, kind: str) -> FileVersion | None:
    async with db.begin() as conn:
        server_id = await _server_id(conn, server)
        file_id = await _active(conn, server_id, kind)
        return None if file_id is None else await _row(conn, file_id, server)
