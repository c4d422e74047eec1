"""Routes, tariffs and their entries, bill types: provisioning and what the API shows of them.

Ownership (the spec only says 22 = "users and tariffs management", 25 = "+ main routes"):
- routes and tariffs carry `owner`, the username they were created for (the acting user;
  an administrator calling with `username=` creates them for that user);
- administrators (accesslevel >= 33) see and change everything;
- corporate users (22) and partners (25) see and change what they own and what is owned by
  users they manage, directly or further down the manager chain; anything else is
  E_DOES_NOT_BELONG_TO_YOU on direct access and absent from their lists;
- ordinary users (< 22) may only read tariffs (getRatesList, getRates, level 1): the public
  tariffs of their provider (their manager; the administrators when the manager is one or
  when they have none) and the tariffs they are on (rates_id, their extensions'
  sip_rates_id and active options).

Secrets: route passwords (`pass`, `balance_password`) are stored Fernet-encrypted
(services.box) and never answered nor logged.

Every write here is reached through a registry method declared `invalidates=(NS_RATING,)`.
Reads used by anonymous/level-1 methods go through the cache under "api:" keys, so they
never collide with the rating engine's own snapshots in the same namespace.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.cache.keys import NS_RATING
from billing_core.db.engine import Database
from billing_core.db.tables import (
    bill_types,
    directions,
    extension_options,
    routes,
    sip_extensions,
    tariff_entries,
    tariffs,
    users,
)
from billing_core.errors import ApiError, ErrorCode
from billing_core.money import MONEY_QUANT, quantize_money
from billing_core.records import UserRecord

if TYPE_CHECKING:
    from billing_core.auth.secrets_store import SecretBox
    from billing_core.services.container import Services

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

ADMIN_LEVEL = 33
RESELLER_LEVEL = 22
MAX_CHAIN_DEPTH = 16  # same bound as Profiles.manager_chain: a cycle cannot loop us

ROUTE_TYPES = ("sip", "sms")
ROUTE_FILTERS = ("all", "sip", "sms", "default")
CALLERID_TYPES = (1, 2, 99)  # 1 RU only, 2 international, 99 without limits
MAX_PRIORITY = 99
MONEY_CEILING = Decimal(1_000_000)  # no per-minute price or connection fee reaches this
MULTIPLIER_QUANT = Decimal("0.000001")  # tariffs.multiplier is NUMERIC(12,6)

# Route names and prefixes end up in callPrepare's space-separated text answer
# ("Allowed … outline/ route1-cli …"), so they may not contain blanks.
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9_.:/\-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{0,128}")
_TOKEN = re.compile(r"[^\s\x00-\x1f\x7f]{0,64}")  # auth user names, handler names
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_BILL_TYPE = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# ---------------------------------------------------------------------------
# Argument checks (E_MISSING_ARGUMENT for an empty obligatory value, else E_INVALID_ARGUMENT)
# ---------------------------------------------------------------------------


def _invalid(detail: str) -> ApiError:
    return ApiError(ErrorCode.E_INVALID_ARGUMENT, detail)


def _required(value: str, name: str, pattern: re.Pattern[str], what: str) -> str:
    if not value:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, f"missing argument: {name}")
    if not pattern.fullmatch(value):
        raise _invalid(f"{name} must be {what}")
    return value


def _optional(value: str, name: str, pattern: re.Pattern[str], what: str) -> str:
    if value and not pattern.fullmatch(value):
        raise _invalid(f"{name} must be {what}")
    return value


def _text(value: str, name: str, *, max_len: int, required: bool, newlines: bool = False) -> str:
    if required and not value:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, f"missing argument: {name}")
    bad = _CONTROL_BUT_NEWLINES if newlines else _CONTROL
    if len(value) > max_len or bad.search(value):
        raise _invalid(f"{name} must be at most {max_len} printable characters")
    return value


def _decimal(value: Decimal, name: str, *, quant: Decimal, places: int, ceiling: Decimal = MONEY_CEILING) -> Decimal:
    """A non-negative amount with at most `quant`'s decimal places (never silently rounded)."""
    if value < 0:
        raise _invalid(f"{name} must not be negative")
    if value >= ceiling:
        raise _invalid(f"{name} must be below {ceiling}")
    exact = value.quantize(quant)
    if exact != value:
        raise _invalid(f"{name} has more than {places} decimal places")
    return exact


def money_arg(value: Decimal, name: str) -> Decimal:
    return _decimal(value, name, quant=MONEY_QUANT, places=4)


def _priority(value: int, name: str) -> int:
    if not 1 <= value <= MAX_PRIORITY:
        raise _invalid(f"{name} must be 1..{MAX_PRIORITY}")
    return value


# ---------------------------------------------------------------------------
# Ownership
# ---------------------------------------------------------------------------


def is_admin(user: UserRecord) -> bool:
    return user.accesslevel >= ADMIN_LEVEL


async def _managers_of(conn: AsyncConnection, username: str) -> list[str]:
    """Managers above `username`, nearest first, read in the caller's transaction."""
    chain: list[str] = []
    current = username
    for _ in range(MAX_CHAIN_DEPTH):
        manager = (await conn.execute(select(users.c.manager).where(users.c.username == current))).scalar()
        if not manager or manager == username or manager in chain:
            break
        chain.append(manager)
        current = manager
    return chain


async def managed_usernames(conn: AsyncConnection, username: str) -> set[str]:
    """`username` and every user below it in the manager tree."""
    seen = {username}
    frontier = {username}
    for _ in range(MAX_CHAIN_DEPTH):
        below = set((await conn.execute(select(users.c.username).where(users.c.manager.in_(frontier)))).scalars())
        frontier = below - seen
        if not frontier:
            break
        seen |= frontier
    return seen


async def may_manage(conn: AsyncConnection, actor: UserRecord, owner: str) -> bool:
    """May `actor` change an object owned by `owner`?"""
    if is_admin(actor) or owner == actor.username:
        return True
    if actor.accesslevel < RESELLER_LEVEL:
        return False
    return actor.username in await _managers_of(conn, owner)


async def _admin_usernames(conn: AsyncConnection) -> set[str]:
    return set((await conn.execute(select(users.c.username).where(users.c.accesslevel >= ADMIN_LEVEL))).scalars())


async def _listing_owners(conn: AsyncConnection, actor: UserRecord, include_managed: bool) -> set[str] | None:
    """Owners whose objects a list shows; None = every owner.

    The spec's `all` ("belonging to corporate users") widens the list: an administrator
    sees the administrators' objects, with all=true everybody's; a reseller its own, with
    all=true also those of the users it manages.
    """
    if is_admin(actor):
        return None if include_managed else await _admin_usernames(conn)
    if include_managed:
        return await managed_usernames(conn, actor.username)
    return {actor.username}


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewRoute:
    route: str
    type: str
    sip_server: str
    prefix: str
    host: str = ""
    user: str = ""
    fromuser: bool = False
    password: str = ""
    callerid: int = 2
    balance_handler: str = ""
    balance_username: str = ""
    balance_password: str = ""

    def validated(self) -> NewRoute:
        _required(self.route, "route", _ROUTE_NAME, "1..64 letters, digits, '_', '.', '-'")
        if self.type not in ROUTE_TYPES:
            raise _invalid(f"type must be one of {', '.join(ROUTE_TYPES)}")
        _required(self.sip_server, "sip_server", _HOST, "a host name or address")
        _required(self.prefix, "prefix", _PREFIX, "1..64 characters without blanks (e.g. outline1/)")
        _optional(self.host, "host", _HOST, "a host name or address")
        _optional(self.user, "user", _TOKEN, "at most 64 characters without blanks")
        _text(self.password, "pass", max_len=128, required=False)
        if self.callerid not in CALLERID_TYPES:
            raise _invalid("callerid must be 1 (RU only), 2 (international) or 99 (without limits)")
        _optional(self.balance_handler, "balance_handler", _TOKEN, "at most 64 characters without blanks")
        _optional(self.balance_username, "balance_username", _TOKEN, "at most 64 characters without blanks")
        _text(self.balance_password, "balance_password", max_len=128, required=False)
        return self


async def add_route(db: Database, box: SecretBox, actor: UserRecord, new: NewRoute) -> int:
    """addRoute: a route owned by `actor`; its name must be new among the owner's routes."""
    new = new.validated()
    try:
        async with db.begin() as conn:
            taken = (
                await conn.execute(
                    select(routes.c.id).where(routes.c.owner == actor.username, routes.c.route == new.route)
                )
            ).first()
            if taken is not None:
                raise ApiError(ErrorCode.E_DATA_ABORT, f"you already have a route named {new.route}")
            result = await conn.execute(
                routes.insert().values(
                    route=new.route,
                    type=new.type,
                    sip_server=new.sip_server,
                    prefix=new.prefix,
                    host=new.host,
                    user=new.user,
                    fromuser=new.fromuser,
                    pass_enc=box.encrypt(new.password) if new.password else None,
                    callerid=new.callerid,
                    balance_handler=new.balance_handler,
                    balance_username=new.balance_username,
                    balance_password_enc=box.encrypt(new.balance_password) if new.balance_password else None,
                    enabled=True,
                    owner=actor.username,
                    is_default=False,
                )
            )
    except IntegrityError as exc:  # a concurrent addRoute of the same name won the race
        raise ApiError(ErrorCode.E_DATA_ABORT, f"you already have a route named {new.route}") from exc
    pk = result.inserted_primary_key
    assert pk is not None
    log.info("route.added", route_id=int(pk[0]), route=new.route, type=new.type, owner=actor.username)
    return int(pk[0])


def _route_json(row: Any) -> dict[str, Any]:
    # The spec's fields first; balance handlers are not run here, so their three fields
    # are null. Secrets (pass, balance_password) are never part of the answer.
    return {
        "id": row.id,
        "prefix": row.prefix,
        "cli": row.callerid,
        "route": row.route,
        "owner": row.owner,
        "enabled": 1 if row.enabled else 0,
        "type": "default" if row.is_default else row.type,
        "lastupdate": None,
        "clientlastupdate": None,
        "balance": None,
        "sip_server": row.sip_server,
        "host": row.host,
        "user": row.user,
        "fromuser": 1 if row.fromuser else 0,
        "balance_handler": row.balance_handler,
        "balance_username": row.balance_username,
    }


async def list_routes(
    db: Database, actor: UserRecord, *, route_type: str = "all", include_managed: bool = False
) -> list[dict[str, Any]]:
    """getRoutes: the routes `actor` may see, by id."""
    if route_type not in ROUTE_FILTERS:
        raise _invalid(f"type must be one of {', '.join(ROUTE_FILTERS)}")
    query = select(routes).order_by(routes.c.id)
    if route_type == "default":
        query = query.where(routes.c.is_default.is_(True) | (routes.c.type == "default"))
    elif route_type != "all":
        query = query.where(routes.c.type == route_type, routes.c.is_default.is_(False))
    async with db.begin() as conn:
        owners = await _listing_owners(conn, actor, include_managed)
        if owners is not None:
            query = query.where(routes.c.owner.in_(sorted(owners)))
        rows = (await conn.execute(query)).all()
    return [_route_json(row) for row in rows]


async def _route_for_change(conn: AsyncConnection, actor: UserRecord, route_id: int) -> Any:
    row = (await conn.execute(select(routes).where(routes.c.id == route_id))).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"no route {route_id}")
    if not await may_manage(conn, actor, row.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"route {route_id} is not yours")
    return row


async def set_route_state(db: Database, actor: UserRecord, route_id: int, enabled: bool) -> None:
    """updateRouteState: enable or disable a route (a disabled route serves no call)."""
    async with db.begin() as conn:
        await _route_for_change(conn, actor, route_id)
        await conn.execute(update(routes).where(routes.c.id == route_id).values(enabled=enabled))
    log.info("route.state_changed", route_id=route_id, enabled=enabled, by=actor.username)


# ---------------------------------------------------------------------------
# Bill types
# ---------------------------------------------------------------------------

MAX_STEP_S = 86_400


async def add_bill_type(db: Database, *, name: str, free_threshold: int, step: int) -> None:
    """addBillType: a new tariffication type (seconds free, then whole steps)."""
    _required(name, "bill_type", _BILL_TYPE, "1..32 letters, digits, '_' or '-'")
    if not 0 <= free_threshold <= MAX_STEP_S:
        raise _invalid(f"free_threshold must be 0..{MAX_STEP_S} seconds")
    if not 0 < step <= MAX_STEP_S:
        raise _invalid(f"step must be 1..{MAX_STEP_S} seconds")
    try:
        async with db.begin() as conn:
            if (await conn.execute(select(bill_types.c.id).where(bill_types.c.type == name))).first() is not None:
                raise ApiError(ErrorCode.E_DATA_ABORT, f"bill type {name} already exists")
            await conn.execute(bill_types.insert().values(type=name, free_threshold=free_threshold, step=step))
    except IntegrityError as exc:
        raise ApiError(ErrorCode.E_DATA_ABORT, f"bill type {name} already exists") from exc
    log.info("bill_type.added", bill_type=name, free_threshold=free_threshold, step=step)


async def list_bill_types(services: Services, gens: Generations) -> list[dict[str, Any]]:
    """getBillTypes: [{"type", "free_threshold", "step"}] by name (cached)."""

    async def load() -> list[dict[str, Any]]:
        async with services.db.begin() as conn:
            rows = (await conn.execute(select(bill_types).order_by(bill_types.c.type))).all()
        return [{"type": r.type, "free_threshold": int(r.free_threshold), "step": int(r.step)} for r in rows]

    found = await services.cache.lookup(gens, NS_RATING, "api:bill_types", load, decode=tuple, encode=list)
    return [dict(item) for item in found or ()]


# ---------------------------------------------------------------------------
# Tariffs
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewTariff:
    table: str
    name: str
    bill_type: str = "byminute"
    is_option: bool = False
    is_public: bool = False
    switch_price: Decimal = Decimal(0)
    multiplier: Decimal = Decimal(1)
    did_multiplier: Decimal = Decimal(1)
    description: str = ""


async def add_tariff(db: Database, actor: UserRecord, new: NewTariff) -> int:
    """addRates: a tariff (or tariff option) owned by `actor`; names are unique per owner.

    `table` is the spec's "DB table name": kept as a label (entries live in one table
    here), so it only has to be an identifier.
    """
    _required(new.table, "table", _TABLE, "an identifier (letters, digits, '_'; not starting with a digit)")
    _text(new.name, "name", max_len=64, required=True)
    _text(new.description, "description", max_len=512, required=False, newlines=True)
    if not new.bill_type:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: bill_type")
    switch_price = money_arg(new.switch_price, "switch_price")
    multiplier = _decimal(new.multiplier, "multiplier", quant=MULTIPLIER_QUANT, places=6)
    did_multiplier = _decimal(new.did_multiplier, "did_multiplier", quant=MULTIPLIER_QUANT, places=6)
    try:
        async with db.begin() as conn:
            known = (await conn.execute(select(bill_types.c.id).where(bill_types.c.type == new.bill_type))).first()
            if known is None:
                raise ApiError(ErrorCode.E_NOT_EXIST, f"no bill type {new.bill_type[:32]}")
            taken = (
                await conn.execute(
                    select(tariffs.c.id).where(tariffs.c.owner == actor.username, tariffs.c.name == new.name)
                )
            ).first()
            if taken is not None:
                raise ApiError(ErrorCode.E_DATA_ABORT, "you already have a tariff with this name")
            result = await conn.execute(
                tariffs.insert().values(
                    table_name=new.table,
                    name=new.name,
                    bill_type=new.bill_type,
                    is_option=new.is_option,
                    is_public=new.is_public,
                    switch_price=switch_price,
                    multiplier=multiplier,
                    did_multiplier=did_multiplier,
                    description=new.description,
                    owner=actor.username,
                )
            )
    except IntegrityError as exc:
        raise ApiError(ErrorCode.E_DATA_ABORT, "you already have a tariff with this name") from exc
    pk = result.inserted_primary_key
    assert pk is not None
    log.info("tariff.added", tariff_id=int(pk[0]), is_option=new.is_option, owner=actor.username)
    return int(pk[0])


async def _current_tariff_ids(conn: AsyncConnection, user: UserRecord) -> set[int]:
    """The tariffs `user` is on: its rates_id, its extensions' sip_rates_id and active options."""
    ids: set[int] = set()
    rates_id = (await conn.execute(select(users.c.rates_id).where(users.c.id == user.id))).scalar()
    if rates_id is not None:
        ids.add(int(rates_id))
    ext_rows = (
        await conn.execute(
            select(sip_extensions.c.id, sip_extensions.c.sip_rates_id).where(sip_extensions.c.user_id == user.id)
        )
    ).all()
    ids.update(int(r.sip_rates_id) for r in ext_rows if r.sip_rates_id is not None)
    if ext_rows:
        options = await conn.execute(
            select(extension_options.c.tariff_id).where(extension_options.c.extension_id.in_([r.id for r in ext_rows]))
        )
        ids.update(int(t) for t in options.scalars())
    return ids


async def _provider_owners(conn: AsyncConnection, user: UserRecord) -> set[str]:
    """Whose public tariffs `user` is offered: its manager's, or the administrators'."""
    if user.manager:
        level = (await conn.execute(select(users.c.accesslevel).where(users.c.username == user.manager))).scalar()
        if level is not None and level < ADMIN_LEVEL:
            return {user.manager}
    return await _admin_usernames(conn)


async def _may_read_tariff(conn: AsyncConnection, actor: UserRecord, row: Any) -> bool:
    if await may_manage(conn, actor, row.owner):
        return True
    if row.id in await _current_tariff_ids(conn, actor):
        return True
    return bool(row.is_public) and row.owner in await _provider_owners(conn, actor)


def _tariff_json(row: Any, eur_course: Decimal) -> dict[str, Any]:
    switch_price = quantize_money(Decimal(row.switch_price))
    return {
        "bill_type": row.bill_type,
        "id": row.id,
        "is_public": bool(row.is_public),
        "table name": row.table_name,  # sic: the spec's key has a blank
        "owner": row.owner,
        "display_switch_price": quantize_money(switch_price * eur_course),
        "name": row.name,
        "switch_price": switch_price,
        "did_multiplier": Decimal(row.did_multiplier).quantize(MULTIPLIER_QUANT),
        "is_option": bool(row.is_option),
        "multiplier": Decimal(row.multiplier).quantize(MULTIPLIER_QUANT),
        "description": row.description,
    }


async def list_tariffs(
    db: Database,
    actor: UserRecord,
    *,
    eur_course: Decimal,
    include_managed: bool = False,
    public_only: bool = False,
    is_option: bool | None = None,
) -> list[dict[str, Any]]:
    """getRatesList: tariffs `actor` may see, by id; display_switch_price at `eur_course`."""
    query = select(tariffs).order_by(tariffs.c.id)
    if public_only:
        query = query.where(tariffs.c.is_public.is_(True))
    if is_option is not None:
        query = query.where(tariffs.c.is_option.is_(is_option))
    async with db.begin() as conn:
        if actor.accesslevel >= RESELLER_LEVEL:
            owners = await _listing_owners(conn, actor, include_managed)
            if owners is not None:
                query = query.where(tariffs.c.owner.in_(sorted(owners)))
        else:
            current = await _current_tariff_ids(conn, actor)
            providers = await _provider_owners(conn, actor)
            offered = tariffs.c.is_public.is_(True) & tariffs.c.owner.in_(sorted(providers))
            query = query.where(offered | tariffs.c.id.in_(sorted(current)) if current else offered)
        rows = (await conn.execute(query)).all()
    return [_tariff_json(row, eur_course) for row in rows]


# ---------------------------------------------------------------------------
# Tariff entries (the spec's "directions in a tariff")
# ---------------------------------------------------------------------------


async def _tariff_for_change(conn: AsyncConnection, actor: UserRecord, tariff_id: int) -> Any:
    row = (await conn.execute(select(tariffs).where(tariffs.c.id == tariff_id))).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"no tariff {tariff_id}")
    if not await may_manage(conn, actor, row.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"tariff {tariff_id} is not yours")
    return row


async def _direction_must_exist(conn: AsyncConnection, direction_id: int) -> None:
    if (await conn.execute(select(directions.c.id).where(directions.c.id == direction_id))).first() is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"no direction {direction_id}")


async def _entry_id(conn: AsyncConnection, tariff_id: int, direction_id: int, priority: int) -> int:
    found = (
        await conn.execute(
            select(tariff_entries.c.id).where(
                tariff_entries.c.tariff_id == tariff_id,
                tariff_entries.c.direction_id == direction_id,
                tariff_entries.c.priority == priority,
            )
        )
    ).scalar()
    if found is None:
        raise ApiError(
            ErrorCode.E_NOT_EXIST, f"tariff {tariff_id} has no direction {direction_id} at priority {priority}"
        )
    return int(found)


def _slot_taken(tariff_id: int, direction_id: int, priority: int) -> ApiError:
    return ApiError(
        ErrorCode.E_DATA_ABORT,
        f"tariff {tariff_id} already has direction {direction_id} at priority {priority}",
    )


async def add_entry(
    db: Database, actor: UserRecord, *, tariff_id: int, direction_id: int, cost: Decimal, route_id: int, priority: int
) -> int:
    """addDirection: price a direction in a tariff on a route; (tariff, direction, priority) is unique."""
    cost = money_arg(cost, "cost")
    _priority(priority, "priority")
    try:
        async with db.begin() as conn:
            await _tariff_for_change(conn, actor, tariff_id)
            await _direction_must_exist(conn, direction_id)
            await _route_for_change(conn, actor, route_id)
            taken = (
                await conn.execute(
                    select(tariff_entries.c.id).where(
                        tariff_entries.c.tariff_id == tariff_id,
                        tariff_entries.c.direction_id == direction_id,
                        tariff_entries.c.priority == priority,
                    )
                )
            ).first()
            if taken is not None:
                raise _slot_taken(tariff_id, direction_id, priority)
            result = await conn.execute(
                tariff_entries.insert().values(
                    tariff_id=tariff_id, direction_id=direction_id, cost=cost, route_id=route_id, priority=priority
                )
            )
    except IntegrityError as exc:
        raise _slot_taken(tariff_id, direction_id, priority) from exc
    pk = result.inserted_primary_key
    assert pk is not None
    log.info(
        "tariff.entry_added", tariff_id=tariff_id, direction_id=direction_id, route_id=route_id,
        priority=priority, by=actor.username,
    )  # fmt: skip
    return int(pk[0])


async def update_entry(
    db: Database,
    actor: UserRecord,
    *,
    tariff_id: int,
    direction_id: int,
    prior: int,
    cost: Decimal | None,
    route_id: int | None,
    priority: int | None,
) -> None:
    """updateDirection: the entry at (tariff, direction, prior) gets a new cost, route and/or priority."""
    changes: dict[str, Any] = {}
    if cost is not None:
        changes["cost"] = money_arg(cost, "cost")
    if priority is not None:
        changes["priority"] = _priority(priority, "priority")
    if route_id is not None:
        changes["route_id"] = route_id
    if not changes:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to change: give cost, route and/or priority")
    new_priority = changes.get("priority", prior)
    try:
        async with db.begin() as conn:
            await _tariff_for_change(conn, actor, tariff_id)
            entry_id = await _entry_id(conn, tariff_id, direction_id, prior)
            if route_id is not None:
                await _route_for_change(conn, actor, route_id)
            if new_priority != prior:
                clash = (
                    await conn.execute(
                        select(tariff_entries.c.id).where(
                            tariff_entries.c.tariff_id == tariff_id,
                            tariff_entries.c.direction_id == direction_id,
                            tariff_entries.c.priority == new_priority,
                        )
                    )
                ).first()
                if clash is not None:
                    raise _slot_taken(tariff_id, direction_id, new_priority)
            await conn.execute(update(tariff_entries).where(tariff_entries.c.id == entry_id).values(**changes))
    except IntegrityError as exc:
        raise _slot_taken(tariff_id, direction_id, new_priority) from exc
    log.info(
        "tariff.entry_updated", tariff_id=tariff_id, direction_id=direction_id, prior=prior,
        fields=sorted(changes), by=actor.username,
    )  # fmt: skip


async def delete_entry(db: Database, actor: UserRecord, *, tariff_id: int, direction_id: int, prior: int) -> None:
    """deleteDirection: remove the entry at (tariff, direction, prior)."""
    async with db.begin() as conn:
        await _tariff_for_change(conn, actor, tariff_id)
        entry_id = await _entry_id(conn, tariff_id, direction_id, prior)
        await conn.execute(delete(tariff_entries).where(tariff_entries.c.id == entry_id))
    log.info("tariff.entry_deleted", tariff_id=tariff_id, direction_id=direction_id, prior=prior, by=actor.username)


# ---------------------------------------------------------------------------
# Reading a tariff's prices (getRates, getCurrentRates)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PricedEntry:
    direction_id: int
    code: str
    direction: str
    route_id: int
    routename: str
    route_enabled: bool
    priority: int
    cost: Decimal  # per minute, EUR, as set by addDirection/updateDirection


@dataclass(frozen=True, slots=True)
class TariffPrices:
    """One tariff's entries with direction and route names (what the cache keeps)."""

    tariff_id: int
    multiplier: Decimal
    entries: tuple[PricedEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "tariff_id": self.tariff_id,
            "multiplier": str(self.multiplier),
            "entries": [
                [e.direction_id, e.code, e.direction, e.route_id, e.routename, e.route_enabled, e.priority, str(e.cost)]
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TariffPrices:
        return cls(
            tariff_id=int(data["tariff_id"]),
            multiplier=Decimal(data["multiplier"]),
            entries=tuple(
                PricedEntry(int(d), str(c), str(n), int(r), str(rn), bool(en), int(p), Decimal(cost))
                for d, c, n, r, rn, en, p, cost in data["entries"]
            ),
        )


async def tariff_prices(services: Services, gens: Generations, tariff_id: int) -> TariffPrices | None:
    """A tariff's priced entries, read through the cache; None when the tariff does not exist."""

    async def load() -> dict[str, Any] | None:
        query = (
            select(
                tariff_entries.c.direction_id,
                directions.c.code,
                directions.c.direction,
                tariff_entries.c.route_id,
                routes.c.route,
                routes.c.enabled,
                tariff_entries.c.priority,
                tariff_entries.c.cost,
            )
            .join(directions, directions.c.id == tariff_entries.c.direction_id)
            .join(routes, routes.c.id == tariff_entries.c.route_id)
            .where(tariff_entries.c.tariff_id == tariff_id)
        )
        async with services.db.begin() as conn:
            multiplier = (await conn.execute(select(tariffs.c.multiplier).where(tariffs.c.id == tariff_id))).scalar()
            if multiplier is None:
                return None
            rows = (await conn.execute(query)).all()
        entries = tuple(
            PricedEntry(
                r.direction_id, r.code, r.direction, r.route_id, r.route, bool(r.enabled), int(r.priority),
                quantize_money(Decimal(r.cost)),
            )
            for r in rows
        )  # fmt: skip
        return TariffPrices(tariff_id, Decimal(multiplier), entries).to_json()

    return await services.cache.lookup(
        gens, NS_RATING, f"api:prices:{tariff_id}", load, decode=TariffPrices.from_json, encode=TariffPrices.to_json
    )


def render_prices(prices: TariffPrices, eur_course: Decimal, *, serviced_only: bool = False) -> list[dict[str, Any]]:
    """The answer of getRates/getCurrentRates: one object per direction, by code.

    The spec's example (`{"direction ID": "direction name", "routing": [...]}`) cannot hold
    more than one direction per object, so each direction is its own object:
    `{"id": direction ID, "code": prefix, "direction": name, "routing": [...]}`, and
    `routing` lists its entries by priority, each
    `{"routename", "route" (route ID), "displaycost", "priority", "cost"}`.
    `cost` is the entry's price per minute in EUR as set by addDirection; `displaycost`
    is what a minute is charged (cost × the tariff's multiplier, as the rating engine
    charges) in the requested currency, rounded half-up to 0.0001.
    `serviced_only` leaves out entries on disabled routes (they serve no call).
    """
    grouped: dict[int, list[PricedEntry]] = defaultdict(list)
    for entry in prices.entries:
        if serviced_only and not entry.route_enabled:
            continue
        grouped[entry.direction_id].append(entry)
    answer: list[dict[str, Any]] = []
    for group in sorted(grouped.values(), key=lambda g: (g[0].code, g[0].direction_id)):
        first = group[0]
        answer.append(
            {
                "id": first.direction_id,
                "code": first.code,
                "direction": first.direction,
                "routing": [
                    {
                        "routename": e.routename,
                        "route": e.route_id,
                        "displaycost": quantize_money(e.cost * prices.multiplier * eur_course),
                        "priority": e.priority,
                        "cost": e.cost,
                    }
                    for e in sorted(group, key=lambda e: e.priority)
                ],
            }
        )
    return answer


async def readable_tariff(db: Database, actor: UserRecord, tariff_id: int) -> None:
    """E_NOT_EXIST / E_DOES_NOT_BELONG_TO_YOU unless `actor` may read the tariff (getRates)."""
    async with db.begin() as conn:
        row = (await conn.execute(select(tariffs).where(tariffs.c.id == tariff_id))).first()
        if row is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, f"no tariff {tariff_id}")
        if not await _may_read_tariff(conn, actor, row):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, f"tariff {tariff_id} is not offered to you")


async def public_price_list(db: Database) -> int | None:
    """The tariff an anonymous getCurrentRates shows: the administrators' first public tariff."""
    async with db.begin() as conn:
        admins = await _admin_usernames(conn)
        found = (
            await conn.execute(
                select(tariffs.c.id)
                .where(
                    tariffs.c.is_public.is_(True),
                    tariffs.c.is_option.is_(False),
                    tariffs.c.owner.in_(sorted(admins)),
                )
                .order_by(tariffs.c.id)
                .limit(1)
            )
        ).scalar()
    return None if found is None else int(found)
