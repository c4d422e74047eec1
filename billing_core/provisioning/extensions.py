"""SIP accounts (extensions): create, read, update, and switch tariffs and tariff options.

An extension belongs to a user (its owner); a caller may touch the extensions of the
users it reaches (billing_core.directory.ownership). SIP passwords and DISA PINs are stored
encrypted with the service's SecretBox and shown only to the owner and administrators.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.asterisk.servers import check_sip_server
from billing_core.checks import (
    check_choice,
    check_extension_name,
    check_length,
    check_range,
    existing_row,
    invalid,
)
from billing_core.clock import utcnow
from billing_core.directory.ownership import is_admin, reaches_in
from billing_core.directory.tables import extension_options, sip_extensions, users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.transfers import charge_fee
from billing_core.provisioning.user_info import extensions_json
from billing_core.rating.tariffs import visible_tariff
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

PIN_RE = re.compile(r"^[0-9]{0,16}$")
TEXT_LIMITS = {
    "sip_password": 128,
    "sip_server": 128,
    "sip_callerid": 32,
    "sip_redirect": 64,
    "sip_language": 20,
    "disa_trusted_cli": 32,
}
CHOICES: dict[str, tuple[int, ...]] = {"sip_srtp": (0, 1), "sip_reach": (0, 2), "sip_force_callback": (0, 1)}
COLUMNS = {"extension": "sip_extension", "sip_password": "sip_password_enc", "disa_pin": "disa_pin_enc"}


async def extension_taken(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(select(sip_extensions.c.id).where(sip_extensions.c.sip_extension == name))
    return found.first() is not None


async def owned_extension(conn: AsyncConnection, caller: UserRecord, name: str) -> Any:
    """The extension row (+ owner_name, owner_account) if the caller reaches its owner."""
    query = (
        select(sip_extensions, users.c.username.label("owner_name"), users.c.account_id.label("owner_account"))
        .join(users, users.c.id == sip_extensions.c.user_id)
        .where(sip_extensions.c.sip_extension == name, sip_extensions.c.deleted_at.is_(None))
    )
    row = await existing_row(conn, query, "no such SIP account")
    if not await reaches_in(conn, caller, row.owner_name):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
    return row


@dataclass(frozen=True, slots=True)
class NewExtension:
    sip_extension: str
    sip_password: str
    sip_server: str
    sip_callerid: str
    sip_language: str | None  # None: the owner's language
    sip_srtp: bool


async def create_extension(services: LedgerContext, owner: UserRecord, new: NewExtension) -> None:
    """createExtension for `owner` (the caller or a user it reaches; checked by the caller of this)."""
    check_extension_name(new.sip_extension)
    if not new.sip_password:
        raise invalid("sip_password must not be empty")
    for name in ("sip_password", "sip_server", "sip_callerid", "sip_language"):
        check_length(name, getattr(new, name) or "", TEXT_LIMITS[name])
    encrypted = services.box.encrypt(new.sip_password)
    try:
        async with services.db.begin() as conn:
            if await extension_taken(conn, new.sip_extension):
                raise ApiError(ErrorCode.E_DATA_ABORT, "this SIP login is taken")
            await check_sip_server(conn, new.sip_server)
            language = (
                new.sip_language
                or (await conn.execute(select(users.c.language).where(users.c.id == owner.id))).scalar_one()
            )
            await conn.execute(
                sip_extensions.insert().values(
                    sip_extension=new.sip_extension,
                    user_id=owner.id,
                    sip_password_enc=encrypted,
                    sip_server=new.sip_server,
                    sip_callerid=new.sip_callerid,
                    sip_language=language,
                    sip_srtp=int(new.sip_srtp),
                    created_at=utcnow(),
                )
            )
    except IntegrityError as exc:  # a concurrent create took the name first
        raise ApiError(ErrorCode.E_DATA_ABORT, "this SIP login is taken") from exc
    log.info("extension.created", extension=new.sip_extension, owner=owner.username)


async def extension_info(services: LedgerContext, caller: UserRecord, name: str) -> dict[str, Any]:
    """getExtensionInfo's object (secrets only for the owner and administrators)."""
    async with services.db.begin() as conn:
        row = await owned_extension(conn, caller, name)
        found = await extensions_json(conn, services, caller, sip_extensions.c.id == row.id)
    return found[row.user_id][0]


def _extension_values(services: LedgerContext, changes: Mapping[str, Any]) -> dict[str, Any]:
    """updateExtension's arguments, checked, as column values (secrets encrypted)."""
    if not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name in TEXT_LIMITS:
            check_length(name, value, TEXT_LIMITS[name])
        if name in CHOICES:
            check_choice(name, value, CHOICES[name])
        if name == "extension":
            check_extension_name(value)
        elif name == "sip_password":
            if not value:
                raise invalid("sip_password must not be empty")
            value = services.box.encrypt(value)
        elif name == "disa_pin":
            if not PIN_RE.match(value):
                raise invalid("disa_pin must be up to 16 digits")
            value = services.box.encrypt(value) if value else None  # empty: no PIN
        elif name in ("sip_max_call_len", "sip_rates_id"):
            check_range(name, value, 0, 2**31 - 1)
        values[COLUMNS.get(name, name)] = value
    return values


async def update_extension(services: LedgerContext, caller: UserRecord, name: str, changes: Mapping[str, Any]) -> None:
    values = _extension_values(services, changes)
    try:
        async with services.db.begin() as conn:
            row = await owned_extension(conn, caller, name)
            await _check_update(conn, caller, row, values)
            await conn.execute(update(sip_extensions).where(sip_extensions.c.id == row.id).values(**values))
    except IntegrityError as exc:
        raise ApiError(ErrorCode.E_DATA_ABORT, "this SIP login is taken") from exc
    log.info("extension.updated", extension=name, by=caller.username, fields=sorted(changes))


async def _check_update(conn: AsyncConnection, caller: UserRecord, row: Any, values: dict[str, Any]) -> None:
    await check_sip_server(conn, values.get("sip_server"))
    if "sip_rates_id" in values:
        # an owner changes its own tariff through switchRates, which charges the switch price
        if row.owner_name == caller.username and not is_admin(caller):
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "use switchRates to change your tariff")
        if values["sip_rates_id"] == 0:
            values["sip_rates_id"] = None
        else:
            await visible_tariff(conn, caller, values["sip_rates_id"], option=False)
    new_name = values.get("sip_extension", row.sip_extension)
    if new_name != row.sip_extension and await extension_taken(conn, new_name):
        raise ApiError(ErrorCode.E_DATA_ABORT, "this SIP login is taken")
    cli = values.get("disa_trusted_cli")
    if cli:  # DISA finds the caller by this number: it must lead to one extension only
        other = await conn.execute(
            select(sip_extensions.c.id).where(sip_extensions.c.disa_trusted_cli == cli, sip_extensions.c.id != row.id)
        )
        if other.first() is not None:
            raise ApiError(ErrorCode.E_DATA_ABORT, "this trusted number is used by another SIP account")


async def switch_rates(
    services: LedgerContext, caller: UserRecord, name: str, tariff_id: int, state: bool | None
) -> None:
    """switchRates: a tariff replaces the extension's tariff; an option is connected (state
    true) or disconnected (false). Connecting charges the tariff's switch_price (EUR) to
    the owner's account."""
    async with services.db.begin() as conn:
        row = await owned_extension(conn, caller, name)
        tariff = await visible_tariff(conn, caller, tariff_id)
        price = Decimal(tariff.switch_price)
        ref = f"switchRates:{name}:{tariff_id}"
        if not tariff.is_option:
            if row.sip_rates_id == tariff_id:
                raise ApiError(ErrorCode.E_ALREADY_ON_THIS_TARIFF)
            await charge_fee(conn, row.owner_account, price, ref=ref, comment=f"tariff {tariff.name}")
            await conn.execute(
                update(sip_extensions).where(sip_extensions.c.id == row.id).values(sip_rates_id=tariff_id)
            )
        else:
            await _switch_option(conn, row, tariff, state, price, ref)
    log.info("extension.switched", extension=name, tariff=tariff_id, state=state, by=caller.username)


async def _switch_option(
    conn: AsyncConnection, row: Any, tariff: Any, state: bool | None, price: Decimal, ref: str
) -> None:
    if state is None:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "state is needed for a tariff option")
    link = (extension_options.c.extension_id == row.id) & (extension_options.c.tariff_id == tariff.id)
    connected = (await conn.execute(select(extension_options.c.tariff_id).where(link))).first() is not None
    if state:
        if connected:
            raise ApiError(ErrorCode.E_ALREADY_ON_THIS_TARIFF)
        await charge_fee(conn, row.owner_account, price, ref=ref, comment=f"option {tariff.name}")
        await conn.execute(extension_options.insert().values(extension_id=row.id, tariff_id=tariff.id))
    else:
        if not connected:
            raise ApiError(ErrorCode.E_NOT_EXIST, "this option is not connected")
        await conn.execute(delete(extension_options).where(link))
