"""The spec's User object as getInfo, getValue and getUsers answer it, and the SIP
account attributes getInfo and getExtensionInfo show. Secrets are shown only to whom
ownership.may_see_secrets allows; the web password never.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.auth.secrets_store import SecretBox
from billing_core.directory.ownership import is_admin, live_user, may_see_secrets, subtree
from billing_core.directory.tables import extension_options, sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import Currency, all_currencies
from billing_core.ledger.tables import accounts
from billing_core.money import ZERO, format_money, money_json
from billing_core.numbers.did_book import did_json
from billing_core.numbers.tables import dids
from billing_core.rating.tables import tariffs
from billing_core.records import UserRecord

Generations = dict[str, int] | None

MONEY_ATTRS = frozenset(
    {
        "balance",
        "overdraft",
        "notify_balance_limit",
        "actualbalance",
        "displaybalance",
        "displayoverdraft",
        "displaynotifybalancelimit",
    }
)
SIP_ATTRS = (
    "sip_extension", "owner", "sip_password", "sip_server", "sip_address", "sip_callerid", "sip_language",
    "sip_rates_id", "rates_name", "sip_rates_options", "sip_srtp", "sip_transport", "sip_max_call_len",
    "sip_reach", "sip_redirect", "sip_force_callback", "sip_realm", "sip_pitch_shift", "sip_host",
    "sip_options", "disa_pin", "disa_trusted_cli", "lastupdated",
)  # fmt: skip


def extension_json(
    row: Any, *, owner: str, options: Iterable[int], rates_name: str, box: SecretBox, viewer: UserRecord | None
) -> dict[str, Any]:
    """The spec's "SIP & DISA account" attributes (getExtensionInfo / getInfo's sip_extensions)."""
    secrets_ok = may_see_secrets(viewer, owner)
    return {
        "sip_extension": row.sip_extension,
        "owner": owner,
        "sip_password": box.decrypt(row.sip_password_enc) if secrets_ok else "",
        "sip_server": row.sip_server,
        "sip_address": row.sip_address,
        "sip_callerid": row.sip_callerid,
        "sip_language": row.sip_language,
        "sip_rates_id": row.sip_rates_id,
        "rates_name": rates_name,
        "sip_rates_options": ",".join(str(o) for o in sorted(options)),
        "sip_srtp": row.sip_srtp,
        "sip_transport": row.sip_transport,
        "sip_max_call_len": row.sip_max_call_len,
        "sip_reach": row.sip_reach,
        "sip_redirect": row.sip_redirect,
        "sip_force_callback": row.sip_force_callback,
        "sip_realm": row.sip_realm,
        "sip_pitch_shift": row.sip_pitch_shift,
        "sip_host": row.sip_host,
        "sip_options": row.sip_options,
        "disa_pin": box.decrypt(row.disa_pin_enc) if secrets_ok else "",
        "disa_trusted_cli": row.disa_trusted_cli,
        "lastupdated": "",  # realtime registration state is not tracked
    }


async def extensions_json(
    conn: AsyncConnection, services: LedgerContext, viewer: UserRecord | None, where: ColumnElement[bool]
) -> dict[int, list[dict[str, Any]]]:
    """Live extensions matching `where`, as JSON, grouped by user id (ordered by extension id)."""
    where = where & sip_extensions.c.deleted_at.is_(None)
    rows = (
        await conn.execute(
            select(sip_extensions, users.c.username.label("owner_name"), tariffs.c.name.label("rates_name"))
            .join(users, users.c.id == sip_extensions.c.user_id)
            .outerjoin(tariffs, tariffs.c.id == sip_extensions.c.sip_rates_id)
            .where(where)
            .order_by(sip_extensions.c.id)
        )
    ).all()
    options: dict[int, list[int]] = {}
    if rows:
        for ext_id, tariff_id in (
            await conn.execute(
                select(extension_options.c.extension_id, extension_options.c.tariff_id).where(
                    extension_options.c.extension_id.in_(
                        select(sip_extensions.c.id).join(users, users.c.id == sip_extensions.c.user_id).where(where)
                    )
                )
            )
        ).all():
            options.setdefault(ext_id, []).append(tariff_id)
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row.user_id, []).append(
            extension_json(
                row,
                owner=row.owner_name,
                options=options.get(row.id, ()),
                rates_name=row.rates_name or "",
                box=services.box,
                viewer=viewer,
            )
        )
    return grouped


def _user_json(row: Any, cur: Currency, viewer: UserRecord | None) -> dict[str, Any]:
    balance, overdraft = Decimal(row.balance), Decimal(row.overdraft)
    limit = Decimal(row.notify_balance_limit)
    return {
        # User
        "id": row.id,
        "username": row.username,
        "password": "",  # stored only as a one-way hash: never given back
        "manager": row.manager or "",
        "accesslevel": row.accesslevel,
        "active": row.active,
        "account": row.account_id,
        "currency": row.currency,
        "language": row.language,
        "timezone": Decimal(row.timezone),
        "allowed_rates": row.allowed_rates,
        "allowed_call_len": row.allowed_call_len,
        "notify_email": row.notify_email,
        "notify_balance": row.notify_balance,
        "notify_balance_limit": money_json(limit),
        "notify_did": row.notify_did,
        "notify_ticket": row.notify_ticket,
        "invites": row.invites,
        "comment": row.comment if is_admin(viewer) else "",
        "rates": row.rates_id,  # updateUser's `rates` (the user's default tariff)
        "callerid": row.callerid,
        # Account
        "balance": money_json(balance),
        "overdraft": money_json(overdraft),
        "refill_allowed": row.refill_allowed,
        "postpaid": row.postpaid,
        "billing_name": row.billing_name,
        "billing_address": row.billing_address,
        "billing_email": row.billing_email,
        "billing_bank_account": row.billing_bank_account,
        # Virtual parameters
        "actualbalance": money_json(balance + overdraft),
        "displaycurrency": cur.sign,
        "displaybalance": money_json(cur.to_display(balance)),
        "displayoverdraft": money_json(cur.to_display(overdraft)),
        "displaynotifybalancelimit": money_json(cur.to_display(limit)),
        "unread_tickets": 0,  # no ticket system
    }


# The Account group of the User object (not accounts.id / created_at, which users has too).
ACCOUNT_COLUMNS = [
    accounts.c[name]
    for name in ("balance", "overdraft", "refill_allowed", "postpaid", "billing_name", "billing_address",
                 "billing_email", "billing_bank_account")
]  # fmt: skip


def _did_json(row: Any, cur: Currency) -> dict[str, Any]:
    """getDIDList's object of the number (its rent fields too), with its id."""
    return {"id": row.id, **did_json(row, cur)}


async def user_objects(
    services: LedgerContext, gens: Generations, viewer: UserRecord | None, where: ColumnElement[bool]
) -> list[dict[str, Any]]:
    """getInfo's object for every live user matching `where`, in three queries whatever the count."""
    where = where & live_user()
    currencies = await all_currencies(services, gens)
    async with services.db.begin() as conn:
        rows = (
            await conn.execute(
                select(users, *ACCOUNT_COLUMNS)
                .join(accounts, accounts.c.id == users.c.account_id)
                .where(where)
                .order_by(users.c.id)
            )
        ).all()
        exts = await extensions_json(
            conn, services, viewer, sip_extensions.c.user_id.in_(select(users.c.id).where(where))
        )
        did_rows = (
            await conn.execute(
                select(dids)
                .where(dids.c.owner.in_(select(users.c.username).where(where)), dids.c.deleted_at.is_(None))
                .order_by(dids.c.id)
            )
        ).all()
    fallback = Currency("EUR", Decimal(1), "€", ZERO, ZERO)
    objects = []
    for row in rows:
        cur = currencies.get(row.currency, fallback)
        obj = _user_json(row, cur, viewer)
        obj["sip_extensions"] = exts.get(row.id, [])
        obj["did_numbers"] = [_did_json(d, cur) for d in did_rows if d.owner == row.username]
        obj["sim_cards"] = []
        obj["broadcasts"] = []
        objects.append(obj)
    return objects


async def user_object(
    services: LedgerContext, gens: Generations, viewer: UserRecord | None, subject: UserRecord
) -> dict[str, Any]:
    found = await user_objects(services, gens, viewer, users.c.id == subject.id)
    if not found:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such user")
    return found[0]


def value_text(name: str, value: Any) -> str:
    """One attribute as getValue's text: money as every answer writes it (format_money), None as ''."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format_money(value) if name in MONEY_ATTRS else f"{value:f}"
    return str(value)


def user_value(obj: Mapping[str, Any], prop: str) -> str:
    """getValue: an attribute of the User object; SIP attributes come from the first extension."""
    if prop in obj and not isinstance(obj[prop], list):
        return value_text(prop, obj[prop])
    if prop in SIP_ATTRS:
        if not obj["sip_extensions"]:
            raise ApiError(ErrorCode.E_NOT_EXIST, "the user has no SIP account")
        return value_text(prop, obj["sip_extensions"][0][prop])
    raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"unknown property: {prop[:64]}")


async def list_users(
    services: LedgerContext, gens: Generations, root: UserRecord, *, viewer: UserRecord | None, everyone: bool
) -> list[dict[str, Any]]:
    """getUsers: the users below `root` down the manager chain; an administrator root with
    all=true: every user. `viewer` decides what secrets are shown."""
    where: ColumnElement[bool]
    if everyone and is_admin(root):
        where = true()
    else:
        where = users.c.username.in_(subtree(root.username))
    return await user_objects(services, gens, viewer, where)
