"""getExtensions and getAvailExtension: the SIP accounts a caller sees, and the next free login.

getExtensions (spec: own [true], all [false], owner):
- `owner=NAME`: that user's SIP accounts (a user the caller reaches);
- otherwise own=true and all=false (the default): the actor's own;
- own=false: the actor's and those of every user below it; all=true: the same, and for
  an administrator every SIP account there is.

getAvailExtension: a main login is XXXXX (MAIN_LENGTH digits, the spec's registerUser
example 40000); a user's additional logins are its main login + yy (01..99: createExtension's
4000001). own=true: the actor's next free XXXXXyy; own=false: the next free XXXXX after
the highest one taken. Deleted SIP accounts keep their logins taken.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.directory.ownership import is_admin, subtree
from billing_core.directory.tables import sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning.user_info import extensions_json
from billing_core.records import UserRecord

MAIN_LENGTH = 5
FIRST_MAIN = 10**(MAIN_LENGTH - 1)
LAST_MAIN = 10**MAIN_LENGTH - 1
MAX_SUFFIX = 99


async def list_extensions(
    services: LedgerContext, viewer: UserRecord, subject: UserRecord, *, below: bool, everyone: bool
) -> list[dict[str, Any]]:
    """`subject`'s SIP accounts; with `below` also its users'; `everyone` (an administrator
    subject): all of them. Secrets only for whom ownership.may_see_secrets allows."""
    where: ColumnElement[bool]
    if everyone and is_admin(subject):
        where = true()
    elif below:
        where = (users.c.id == subject.id) | users.c.username.in_(subtree(subject.username))
    else:
        where = users.c.id == subject.id
    async with services.db.begin() as conn:
        grouped = await extensions_json(conn, services, viewer, where & users.c.deleted_at.is_(None))
    found = [ext for exts in grouped.values() for ext in exts]
    return sorted(found, key=lambda ext: (ext["owner"] != subject.username, ext["sip_extension"]))


async def _taken(conn: AsyncConnection, names: list[str]) -> set[str]:
    rows = await conn.execute(select(sip_extensions.c.sip_extension).where(sip_extensions.c.sip_extension.in_(names)))
    return set(rows.scalars())


async def next_own_extension(services: LedgerContext, actor: UserRecord) -> str:
    """The actor's next free additional login: its first SIP account's login + 01..99."""
    async with services.db.begin() as conn:
        main = (
            await conn.execute(
                select(sip_extensions.c.sip_extension)
                .where(sip_extensions.c.user_id == actor.id, sip_extensions.c.deleted_at.is_(None))
                .order_by(sip_extensions.c.id)
                .limit(1)
            )
        ).scalar()
        if main is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "you have no SIP account to add one to")
        candidates = [f"{main}{n:02d}" for n in range(1, MAX_SUFFIX + 1)]
        taken = await _taken(conn, candidates)
    free = [name for name in candidates if name not in taken and len(name) <= 32]
    if not free:
        raise ApiError(ErrorCode.E_CANT_CREATE_ASTERISK_EXTENSION, f"{main}01..{main}{MAX_SUFFIX} are all taken")
    return free[0]


async def next_main_extension(services: LedgerContext) -> str:
    """The next free XXXXX login after the highest one taken (live or deleted); from the
    lowest one up when the highest is LAST_MAIN."""
    mains = (
        (func.length(sip_extensions.c.sip_extension) == MAIN_LENGTH)
        & (sip_extensions.c.sip_extension >= str(FIRST_MAIN))
        & (sip_extensions.c.sip_extension <= str(LAST_MAIN))
    )
    async with services.db.begin() as conn:
        names = set((await conn.execute(select(sip_extensions.c.sip_extension).where(mains))).scalars())
    numbers = sorted(int(n) for n in names if n.isdigit())
    start = numbers[-1] + 1 if numbers else FIRST_MAIN
    for number in [*range(start, LAST_MAIN + 1), *range(FIRST_MAIN, start)]:
        if str(number) not in names:
            return str(number)
    raise ApiError(ErrorCode.E_CANT_CREATE_ASTERISK_EXTENSION, "every XXXXX login is taken")
