"""Prepaid codes (the spec's invite-codes / prepaid card codes): the code itself, creation
(createPrepaidCode, registerRequest), listing (getPrepaidCodes), deletion
(deletePrepaidCode) and expiry (`expire_codes`, for the maintenance run).

A code is 24 characters of a 32-letter alphabet (no 0/O/1/I): 120 random bits from the
operating system's generator, shown in groups of four (`ABCD-EFGH-…`) and accepted with or
without the dashes, in either case. Only its sha256 is stored (120 bits leave nothing to
brute-force a fast hash for) and its last four characters as a hint, so a listing cannot
give a code away and 100 bits stay unknown beside the hint. Codes are never logged: log
lines name a code by its row id. Where a code's money comes from: billing_core.ledger.code_money.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.checks import check_grantable_level, invalid
from billing_core.clock import as_utc, utcnow, wire_time
from billing_core.db.engine import Database
from billing_core.directory.ownership import is_admin, managed_usernames, reaches
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.code_money import fund_code, refund_code
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency_or_system
from billing_core.money import ZERO, check_storable, money_json
from billing_core.provisioning.tables import prepaid_codes
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # 32 letters: 5 bits each
CODE_LEN = 24  # 120 bits
CODE_BITS = CODE_LEN * 5
HINT_LEN = 4
ACTIVE, USED, DELETED, EXPIRED, VOID = "active", "used", "deleted", "expired", "void"


def new_code() -> str:
    """A fresh code, formatted in groups of four."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LEN))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LEN, 4))


def normalize(code: str) -> str | None:
    """The code as stored (dashes and spaces dropped, upper case), None if it cannot be one."""
    text = code.replace("-", "").replace(" ", "").upper()
    if len(text) != CODE_LEN or any(ch not in ALPHABET for ch in text):
        return None
    return text


def code_hash(code: str) -> str | None:
    """sha256 of the normalized code; None for a string that cannot be a code."""
    normalized = normalize(code)
    return None if normalized is None else hashlib.sha256(normalized.encode()).hexdigest()


def masked(hint: str) -> str:
    """How listings show a code: its hint only."""
    return "-".join(["****"] * (CODE_LEN // 4 - 1) + [hint])


def is_expired(row: Any, now: datetime) -> bool:
    expires = as_utc(row.expires_at)
    return expires is not None and expires <= now


@dataclass(frozen=True, slots=True)
class NewCode:
    accesslevel: int
    balance: Decimal  # in the creator's currency
    target: str
    signature: str = ""
    expires_at: datetime | None = None


async def _take_invite(conn: AsyncConnection, creator: UserRecord) -> None:
    """Below administrators, each code uses one of the creator's `invites` (the spec's
    "accessible invitations number"); none left is E_INVITE_LIMIT_REACHED."""
    if is_admin(creator):
        return
    taken = await conn.execute(
        update(users).where(users.c.id == creator.id, users.c.invites > 0).values(invites=users.c.invites - 1)
    )
    if not taken.rowcount:
        raise ApiError(ErrorCode.E_INVITE_LIMIT_REACHED, "no invitations left (the user's `invites`)")


async def create_code(
    services: LedgerContext, gens: Generations, creator: UserRecord, new: NewCode, *, uses_invite: bool = True
) -> str:
    """createPrepaidCode (and registerRequest, uses_invite=False): the code, in clear, once."""
    check_grantable_level(new.accesslevel, creator)
    if new.balance < ZERO:
        raise invalid("balance must not be negative")
    amount_eur = (await currency_or_system(services, gens, creator.currency)).to_eur(new.balance)
    try:
        check_storable(amount_eur)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    if new.target:
        if await services.profiles.user_by(gens, "username", new.target) is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such target user (SIM-card targets: no SIM cards yet)")
    code = new_code()
    normalized = normalize(code)
    assert normalized is not None
    now = utcnow()
    async with services.db.begin() as conn:
        if uses_invite:
            await _take_invite(conn, creator)
        if new.signature:  # registerRequest again for the same client: the last code counts
            await conn.execute(
                update(prepaid_codes)
                .where(
                    prepaid_codes.c.signature == new.signature,
                    prepaid_codes.c.owner == creator.username,
                    prepaid_codes.c.status == ACTIVE,
                )
                .values(status=VOID)
            )
        inserted = await conn.execute(
            prepaid_codes.insert()
            .values(
                code_hash=hashlib.sha256(normalized.encode()).hexdigest(),
                hint=normalized[-HINT_LEN:],
                owner=creator.username,
                accesslevel=new.accesslevel,
                face_value=amount_eur,
                balance=amount_eur,
                target=new.target,
                signature=new.signature,
                status=ACTIVE,
                created_at=now,
                expires_at=new.expires_at,
            )
            .returning(prepaid_codes.c.id)
        )
        code_id = int(inserted.scalar_one())
        funded = await fund_code(conn, creator, amount_eur, code_id)
        if funded is not None:
            await conn.execute(update(prepaid_codes).where(prepaid_codes.c.id == code_id).values(funded_account=funded))
    log.info("codes.created", code=code_id, owner=creator.username, accesslevel=new.accesslevel,
             balance_eur=str(amount_eur), funded=funded is not None)  # fmt: skip
    return code


def register_request_code(signature: str, ttl_s: int) -> NewCode:
    """registerRequest's code: level 10 ("new user"), no money, valid for `ttl_s`."""
    return NewCode(accesslevel=10, balance=ZERO, target="", signature=signature,
                   expires_at=utcnow() + timedelta(seconds=ttl_s))  # fmt: skip


async def _timezone_of(conn: AsyncConnection, user: UserRecord) -> Decimal:
    value = (await conn.execute(select(users.c.timezone).where(users.c.id == user.id))).scalar()
    return Decimal(value or 0)


def _client_time(value: datetime | None, hours: Decimal) -> str:
    moment = as_utc(value)
    return "" if moment is None else wire_time(moment + timedelta(hours=float(hours)))


async def list_codes(
    services: LedgerContext,
    gens: Generations,
    actor: UserRecord,
    *,
    active_only: bool,
    everyone: bool,
    count: bool,
) -> list[dict[str, Any]] | int:
    """getPrepaidCodes: the actor's codes (`all`: also those of every user it manages, every
    code for an administrator); `active`: only codes that can still be used; `count`: how many."""
    cur = await currency_or_system(services, gens, actor.currency)
    query = select(prepaid_codes).where(prepaid_codes.c.status != DELETED)
    now = utcnow()
    async with services.db.begin() as conn:
        if not everyone:
            query = query.where(prepaid_codes.c.owner == actor.username)
        elif not is_admin(actor):
            query = query.where(prepaid_codes.c.owner.in_(sorted(await managed_usernames(conn, actor.username))))
        if active_only:
            unexpired = or_(prepaid_codes.c.expires_at.is_(None), prepaid_codes.c.expires_at > now)
            query = query.where(prepaid_codes.c.status == ACTIVE, unexpired)
        if count:
            counted = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            return int(counted)
        rows = (await conn.execute(query.order_by(prepaid_codes.c.id))).all()
        hours = await _timezone_of(conn, actor)
    return [
        {
            "id": row.id,
            "created": wire_time(as_utc(row.created_at)),
            "client_created": _client_time(row.created_at, hours),
            "balance": money_json(Decimal(row.balance)),
            "display_balance": money_json(cur.to_display(Decimal(row.balance))),
            "code": masked(row.hint),
            "access_level": row.accesslevel,
            "owner": row.owner,
            "target": row.target,
            "status": EXPIRED if row.status == ACTIVE and is_expired(row, now) else row.status,
            "activated_to": row.activated_to,
            "activated_date": wire_time(as_utc(row.activated_at)),
            "client_activated_date": _client_time(row.activated_at, hours),
        }
        for row in rows
    ]


async def delete_code(services: LedgerContext, gens: Generations, actor: UserRecord, code: str) -> None:
    """deletePrepaidCode: a code never activated, by its creator or whoever manages it; what
    is on a funded code goes back to the account that paid. Kept as `deleted` (the books
    refer to it), hidden from listings."""
    hashed = code_hash(code)
    row = None
    if hashed is not None:
        async with services.db.begin() as conn:
            row = (await conn.execute(select(prepaid_codes).where(prepaid_codes.c.code_hash == hashed))).first()
    if row is None or row.status not in (ACTIVE, USED):
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such prepaid code")
    if not await reaches(services.profiles, gens, actor, row.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the code was created by another user")
    async with services.db.begin() as conn:
        query = select(prepaid_codes).where(prepaid_codes.c.id == row.id).with_for_update()
        row = (await conn.execute(query)).one()
        if row.status not in (ACTIVE, USED):
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such prepaid code")
        if row.activated_account is not None:
            raise ApiError(ErrorCode.E_DATA_ABORT, "an activated code cannot be deleted")
        if row.funded_account is not None:
            await refund_code(conn, row.funded_account, Decimal(row.balance), code_id=row.id)
        await conn.execute(
            update(prepaid_codes)
            .where(prepaid_codes.c.id == row.id)
            .values(status=DELETED, balance=0, deleted_at=utcnow())
        )
    log.info("codes.deleted", code=row.id, by=actor.username)


async def expire_codes(db: Database, now: datetime | None = None) -> int:
    """Mark every active code past its `expires_at` expired (registerRequest's codes); what a
    funded one still holds goes back to the account that paid. Idempotent; for the
    maintenance run (doMaintenance). Returns how many codes expired."""
    moment = now or utcnow()
    async with db.begin() as conn:
        query = (
            select(prepaid_codes)
            .where(prepaid_codes.c.status == ACTIVE, prepaid_codes.c.expires_at <= moment)
            .order_by(prepaid_codes.c.id)
            .with_for_update()
        )
        rows = (await conn.execute(query)).all()
        for row in rows:
            if row.funded_account is not None:
                await refund_code(conn, row.funded_account, Decimal(row.balance), code_id=row.id)
            await conn.execute(
                update(prepaid_codes).where(prepaid_codes.c.id == row.id).values(status=EXPIRED, balance=0)
            )
    if rows:
        log.info("codes.expired", count=len(rows))
    return len(rows)
