"""Users: who may touch whom, the spec's User object, and user provisioning.

Reach (ownership): a user reaches itself and every user below it in the manager chain;
administrators (accesslevel >= 33) reach everyone. Every check takes the *caller* (the
authenticated user, whose rights the dispatcher checked) explicitly.

Inside a transaction nothing here calls the cached profiles (on SQLite the one
connection is already taken): `managers_in(conn, …)` walks the chain in SQL instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.auth.secrets_store import SecretBox, hash_password
from billing_core.db.tables import (
    accounts,
    dids,
    extension_options,
    sip_extensions,
    tariffs,
    users,
)
from billing_core.errors import ApiError, ErrorCode
from billing_core.money import ZERO, format_money
from billing_core.records import UserRecord
from billing_core.services.accounts import create_account, create_user, utcnow
from billing_core.services.catalog import _may_read_tariff as may_read_tariff  # getRatesList's rule, once
from billing_core.services.container import Services
from billing_core.services.currency import Currency, all_currencies, currency, currency_or_system

Generations = dict[str, int] | None

ADMIN_LEVEL = 33  # system administrators see and edit everything
USER_LEVELS = (10, 11, 22, 25, 33, 44)  # the spec's User object `accesslevel` values
ACTIVE_VALUES = (-1, 0, 1, 2, 3, 99)
MAX_CHAIN = 16  # same bound as Profiles.manager_chain

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,32}$")
EXTENSION_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")


# --- reach -------------------------------------------------------------------------


def is_admin(user: UserRecord | None) -> bool:
    return user is not None and user.accesslevel >= ADMIN_LEVEL


async def reaches(services: Services, gens: Generations, caller: UserRecord, username: str) -> bool:
    if caller.username == username or is_admin(caller):
        return True
    return caller.username in await services.profiles.manager_chain(gens, username)


async def reachable_user(services: Services, gens: Generations, caller: UserRecord, username: str) -> UserRecord:
    """The named user if the caller reaches it: E_NOT_EXIST / E_DOES_NOT_BELONG_TO_YOU otherwise."""
    target = await services.profiles.user_by(gens, "username", username)
    if target is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such user")
    if not await reaches(services, gens, caller, target.username):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)
    return target


async def managers_in(conn: AsyncConnection, username: str) -> list[str]:
    """Managers above `username`, nearest first, read in the caller's transaction."""
    chain: list[str] = []
    current: str | None = username
    while current is not None and len(chain) < MAX_CHAIN:
        manager = (await conn.execute(select(users.c.manager).where(users.c.username == current))).scalar()
        if not manager or manager in chain or manager == username:
            break
        chain.append(manager)
        current = manager
    return chain


async def reaches_in(conn: AsyncConnection, caller: UserRecord, username: str) -> bool:
    """`reaches`, read in the caller's transaction."""
    if caller.username == username or is_admin(caller):
        return True
    return caller.username in await managers_in(conn, username)


def subtree(root: str) -> Select[Any]:
    """Usernames below `root` down the manager chain (UNION stops on cycles)."""
    tree = select(users.c.username).where(users.c.manager == root).cte("tree", recursive=True)
    tree = tree.union(select(users.c.username).join(tree, users.c.manager == tree.c.username))
    return select(tree.c.username).where(tree.c.username != root)


@dataclass(frozen=True, slots=True)
class AccountRelation:
    """How a caller stands to an account: on it, and/or managing its users."""

    caller: str
    caller_is_admin: bool
    usernames: tuple[str, ...]  # the users on the account
    managed: frozenset[str]  # those of them below the caller

    @property
    def caller_on_account(self) -> bool:
        return self.caller in self.usernames

    @property
    def manages_all(self) -> bool:
        """Every user on it is below the caller (never true for an empty account)."""
        return bool(self.usernames) and all(n in self.managed for n in self.usernames)

    @property
    def controls(self) -> bool:
        """May attach users to it: administrators, or only the caller and its users are on it."""
        return self.caller_is_admin or (
            bool(self.usernames) and all(n == self.caller or n in self.managed for n in self.usernames)
        )

    @property
    def may_change_money(self) -> bool:
        """Balance, overdraft, refill_allowed, postpaid: administrators or the manager of every user."""
        return self.caller_is_admin or self.manages_all

    @property
    def visible(self) -> bool:
        return self.caller_is_admin or self.caller_on_account or self.manages_all


async def account_relation(conn: AsyncConnection, caller: UserRecord, account_id: int) -> AccountRelation:
    """E_NOT_EXIST for an unknown account; read in the caller's transaction."""
    if (await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))).first() is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such account")
    names = tuple(
        (await conn.execute(select(users.c.username).where(users.c.account_id == account_id).order_by(users.c.id)))
        .scalars()
        .all()
    )
    managed = frozenset([n for n in names if caller.username in await managers_in(conn, n)])
    return AccountRelation(caller.username, is_admin(caller), names, managed)


async def visible_tariff(
    conn: AsyncConnection, caller: UserRecord, tariff_id: int, *, option: bool | None = None
) -> Any:
    """A tariff row the caller may put itself or its users on: exactly what getRatesList
    offers it (catalog's rule: its own and its users' tariffs, the public tariffs of its
    provider, the ones it is on; administrators: any). Anything else is E_NOT_EXIST.

    `option` True/False also requires it to be (or not be) a tariff option.
    """
    row = (await conn.execute(select(tariffs).where(tariffs.c.id == tariff_id))).first()
    if row is None or not await may_read_tariff(conn, caller, row):
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such tariff")
    if option is not None and bool(row.is_option) != option:
        kind = "a tariff option" if option else "a tariff (not an option)"
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"tariff {tariff_id} is not {kind}")
    return row


# --- the User object -----------------------------------------------------------------

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


def wire_time(value: datetime | None) -> str:
    """'YYYY-MM-DD HH:MM:SS' in UTC (SQLite hands back naive datetimes, which are UTC here)."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def may_see_secrets(viewer: UserRecord | None, owner: str) -> bool:
    """SIP passwords and PINs: only the extension's owner and administrators."""
    return viewer is not None and (viewer.username == owner or is_admin(viewer))


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
    conn: AsyncConnection, services: Services, viewer: UserRecord | None, where: ColumnElement[bool]
) -> dict[int, list[dict[str, Any]]]:
    """Extensions matching `where`, as JSON, grouped by user id (ordered by extension id)."""
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
        "notify_balance_limit": limit,
        "notify_did": row.notify_did,
        "notify_ticket": row.notify_ticket,
        "invites": row.invites,
        "comment": row.comment if is_admin(viewer) else "",
        "rates": row.rates_id,  # updateUser's `rates` (the user's default tariff)
        "callerid": row.callerid,
        # Account
        "balance": balance,
        "overdraft": overdraft,
        "refill_allowed": row.refill_allowed,
        "postpaid": row.postpaid,
        "billing_name": row.billing_name,
        "billing_address": row.billing_address,
        "billing_email": row.billing_email,
        "billing_bank_account": row.billing_bank_account,
        # Virtual parameters
        "actualbalance": balance + overdraft,
        "displaycurrency": cur.sign,
        "displaybalance": cur.to_display(balance),
        "displayoverdraft": cur.to_display(overdraft),
        "displaynotifybalancelimit": cur.to_display(limit),
        "unread_tickets": 0,  # no ticket system
    }


# The Account group of the User object (not accounts.id / created_at, which users has too).
ACCOUNT_COLUMNS = [
    accounts.c[name]
    for name in ("balance", "overdraft", "refill_allowed", "postpaid", "billing_name", "billing_address",
                 "billing_email", "billing_bank_account")
]  # fmt: skip


def _did_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "did": row.did,
        "owner": row.owner,
        "comment": row.comment,
        "cost": Decimal(row.cost),
        "expiration": wire_time(row.expiration),
        "enabled": int(bool(row.enabled)),
    }


async def user_objects(
    services: Services, gens: Generations, viewer: UserRecord | None, where: ColumnElement[bool]
) -> list[dict[str, Any]]:
    """getInfo's object for every user matching `where`, in three queries whatever the count."""
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
                select(dids).where(dids.c.owner.in_(select(users.c.username).where(where))).order_by(dids.c.id)
            )
        ).all()
    fallback = Currency("EUR", Decimal(1), "€", ZERO, ZERO)
    objects = []
    for row in rows:
        obj = _user_json(row, currencies.get(row.currency, fallback), viewer)
        obj["sip_extensions"] = exts.get(row.id, [])
        obj["did_numbers"] = [_did_json(d) for d in did_rows if d.owner == row.username]
        obj["sim_cards"] = []
        obj["broadcasts"] = []
        objects.append(obj)
    return objects


async def user_object(
    services: Services, gens: Generations, viewer: UserRecord | None, subject: UserRecord
) -> dict[str, Any]:
    found = await user_objects(services, gens, viewer, users.c.id == subject.id)
    if not found:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such user")
    return found[0]


def value_text(name: str, value: Any) -> str:
    """One attribute as getValue's text: money with 4 decimals (format_money), None as ''."""
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
    services: Services, gens: Generations, root: UserRecord, *, viewer: UserRecord | None, everyone: bool
) -> list[dict[str, Any]]:
    """getUsers: the users below `root` down the manager chain; an administrator root with
    all=true: every user. `viewer` decides what secrets are shown."""
    where: ColumnElement[bool]
    if everyone and is_admin(root):
        where = true()
    else:
        where = users.c.username.in_(subtree(root.username))
    return await user_objects(services, gens, viewer, where)


# --- provisioning ---------------------------------------------------------------------


def invalid(detail: str) -> ApiError:
    return ApiError(ErrorCode.E_INVALID_ARGUMENT, detail)


def check_range(name: str, value: int | Decimal, low: int | Decimal, high: int | Decimal) -> None:
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}")


def check_choice(name: str, value: int, allowed: Iterable[int]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise invalid(f"{name} must be one of {', '.join(str(a) for a in allowed)}")


def check_length(name: str, value: str, maximum: int) -> None:
    if len(value) > maximum:
        raise invalid(f"{name} is longer than {maximum} characters")


def check_md5(name: str, value: str) -> str:
    """Web passwords travel as md5 hex (the spec's convention)."""
    if not MD5_RE.match(value):
        raise invalid(f"{name} must be an md5 hash (32 hex digits)")
    return value.lower()


def check_extension_name(value: str) -> str:
    if not EXTENSION_RE.match(value):
        raise ApiError(ErrorCode.E_WRONG_EXTENSION, "a SIP login is 3..32 characters of A-Z a-z 0-9 _ . -")
    return value


def check_grantable_level(level: int, *grantors: UserRecord) -> None:
    """A user can be given a spec level, never one above whoever grants it."""
    check_choice("accesslevel", level, USER_LEVELS)
    if any(level > g.accesslevel for g in grantors):
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "accesslevel above your own")


def parse_account(value: str) -> int | None:
    """registerUser's `account`: 'auto' (None: create one) or an account number."""
    if value.lower() == "auto":
        return None
    if not value.isdigit() or len(value) > 9:
        raise invalid("account must be 'auto' or an account number")
    return int(value)


@dataclass(frozen=True, slots=True)
class NewUser:
    username: str
    md5_password: str
    accesslevel: int
    sip_server: str
    sip_extension: str
    sip_password: str
    balance: Decimal  # in the registering user's currency
    language: str
    currency: str
    sip_srtp: bool
    account: str  # "auto" or an account number


async def register_user(
    services: Services, gens: Generations, caller: UserRecord, manager: UserRecord, new: NewUser
) -> int:
    """registerUser: the user, its account (or a share of one) and its SIP account, at once."""
    if not USERNAME_RE.match(new.username):
        raise invalid("user must be 2..32 characters of A-Z a-z 0-9 _ . @ -")
    md5 = check_md5("web_password", new.md5_password)
    check_grantable_level(new.accesslevel, caller, manager)
    check_extension_name(new.sip_extension)
    if not new.sip_password:
        raise invalid("sip_password must not be empty")
    check_length("sip_server", new.sip_server, 128)
    check_length("language", new.language, 20)
    if new.balance < ZERO:
        raise invalid("balance must not be negative")
    user_currency = (await currency(services, gens, new.currency)).code
    # the spec: the initial balance is in the registering user's currency, whatever `currency` says
    balance_eur = (await currency_or_system(services, gens, manager.currency)).to_eur(new.balance)
    join = parse_account(new.account)
    if join is not None and balance_eur != ZERO:
        raise invalid("an initial balance needs account=auto (use transferMoney to fund a shared account)")
    password_hash = hash_password(md5)  # scrypt: slow, so outside the transaction
    sip_password_enc = services.box.encrypt(new.sip_password)
    try:
        async with services.db.begin() as conn:
            if (await conn.execute(select(users.c.id).where(users.c.username == new.username))).first():
                raise ApiError(ErrorCode.E_DATA_ABORT, "this user name is taken")
            if await extension_taken(conn, new.sip_extension):
                raise ApiError(ErrorCode.E_CANT_CREATE_ASTERISK_EXTENSION, "this SIP login is taken")
            if join is None:
                account_id = await create_account(conn, balance=balance_eur)
            else:
                if not (await account_relation(conn, manager, join)).controls:
                    raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "this account is not yours")
                account_id = join
            user_id = await create_user(
                conn,
                username=new.username,
                password_hash=password_hash,
                accesslevel=new.accesslevel,
                manager=manager.username,
                account_id=account_id,
                currency=user_currency,
                language=new.language,
            )
            await conn.execute(
                sip_extensions.insert().values(
                    sip_extension=new.sip_extension,
                    user_id=user_id,
                    sip_password_enc=sip_password_enc,
                    sip_server=new.sip_server,
                    sip_language=new.language,
                    sip_srtp=int(new.sip_srtp),
                    created_at=utcnow(),
                )
            )
    except IntegrityError as exc:  # a concurrent registration took the name first
        raise ApiError(ErrorCode.E_DATA_ABORT, "this user name or SIP login is taken") from exc
    return user_id


async def extension_taken(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(select(sip_extensions.c.id).where(sip_extensions.c.sip_extension == name))
    return found.first() is not None


# updateUser fields by who may set them on a user (the caller itself or one it reaches).
SELF_FIELDS = frozenset(
    {"web_password", "currency", "language", "timezone", "notify_email", "notify_balance", "notify_did",
     "notify_ticket", "notify_balance_limit"}
)  # fmt: skip
MANAGER_FIELDS = frozenset(
    {"accesslevel", "active", "account", "rates", "allowed_rates", "allowed_call_len", "invites"}
)
ADMIN_FIELDS = frozenset({"comment"})
USER_COLUMNS = {"rates": "rates_id", "account": "account_id"}


def _check_user_field(name: str, value: Any) -> Any:
    """Range and length of one updateUser field; the value to store."""
    if name == "active":
        check_choice(name, value, ACTIVE_VALUES)
    elif name in ("notify_balance", "notify_ticket"):
        check_choice(name, value, (0, 1))
    elif name == "notify_did":
        check_range(name, value, -1, 3650)
    elif name in ("allowed_call_len", "invites", "rates", "account"):
        check_range(name, value, 0, 2**31 - 1)
    elif name == "notify_balance_limit":
        check_range(name, value, ZERO, Decimal("1e12"))
    elif name == "timezone":
        check_range(name, value, Decimal(-12), Decimal(14))
    elif isinstance(value, str):
        limits = {"language": 20, "allowed_rates": 20, "notify_email": 256, "comment": 1024}
        check_length(name, value, limits.get(name, 1024))
    return value


async def update_user(
    services: Services, gens: Generations, caller: UserRecord, target: UserRecord, changes: Mapping[str, Any]
) -> None:
    """updateUser on `target` (the caller or a user it reaches; checked by the caller of this)."""
    if not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to update")
    is_self = target.username == caller.username
    if not is_self and target.accesslevel > caller.accesslevel:
        raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "this user's level is above yours")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ADMIN_FIELDS and not is_admin(caller):
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, f"{name} is for administrators")
        if name in MANAGER_FIELDS and is_self:
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, f"{name} is set by your manager")
        if name not in SELF_FIELDS | MANAGER_FIELDS | ADMIN_FIELDS:
            raise invalid(f"{name} cannot be changed")
        values[USER_COLUMNS.get(name, name)] = _check_user_field(name, value)
    if "accesslevel" in values:
        check_grantable_level(values["accesslevel"], caller)
    if "web_password" in values:
        values["password_hash"] = hash_password(check_md5("web_password", values.pop("web_password")))
    if "currency" in values:
        values["currency"] = (await currency(services, gens, values["currency"])).code
    async with services.db.begin() as conn:
        if "account_id" in values and not (await account_relation(conn, caller, values["account_id"])).controls:
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "this account is not yours")
        if values.get("rates_id") == 0:
            values["rates_id"] = None
        elif "rates_id" in values:
            await visible_tariff(conn, caller, values["rates_id"], option=False)
        await conn.execute(update(users).where(users.c.id == target.id).values(**values))
