"""Routes: addRoute, getRoutes, getRouteInfo, updateRoute, updateRouteState, deleteRoute.

A route carries `owner`, the username it was created for (the acting user; an
administrator calling with `username=` creates it for that user). Who sees and changes
which routes is billing_core.directory.ownership (`listing_owners`, `changeable_row`).

Secrets: route passwords (`pass`, `balance_password`) are stored Fernet-encrypted
(services.box) and never answered nor logged. Every write here is reached through a
registry method declared `invalidates=(NS_RATING,)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.checks import invalid, optional_arg, required_arg, text_arg
from billing_core.db.engine import Database
from billing_core.directory.ownership import changeable_row, listing_owners
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.tables import routes, tariff_entries
from billing_core.records import UserRecord

if TYPE_CHECKING:
    from billing_core.auth.secrets_store import SecretBox

log = structlog.get_logger(__name__)

ROUTE_TYPES = ("sip", "sms")
ROUTE_FILTERS = ("all", "sip", "sms", "default")
CALLERID_TYPES = (1, 2, 99)  # 1 RU only, 2 international, 99 without limits

# Route names and prefixes end up in callPrepare's space-separated text answer
# ("Allowed … 8 carrier-a …"), so they may not contain blanks.
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# A SIP route's prefix is dialled in front of the number (dialplan/extensions.conf:
# PJSIP/<prefix><number>@<route>, or the operator's CALLGATE_DIAL). Only what is valid inside
# a dial string's number: '/' ("outline/" made chan_pjsip look for an endpoint "outline"),
# '@', ',', '&', '^', '(', ')', ':', quotes and '$'/'{' (EVAL of a CALLGATE_DIAL template)
# would each break or re-route the Dial. Empty is a route without a prefix.
_DIAL_PREFIX = re.compile(r"[0-9A-Za-z*#+_.\-]{0,32}")
_DIAL_PREFIX_WHAT = "at most 32 of 0-9 A-Z a-z * # + _ . - (it is dialled before the number; empty for none)"
_SMS_HANDLER = re.compile(r"[A-Za-z0-9_.:/\-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{0,128}")
_TOKEN = re.compile(r"[^\s\x00-\x1f\x7f]{0,64}")  # auth user names, handler names


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
        required_arg(self.route, "route", _ROUTE_NAME, "1..64 letters, digits, '_', '.', '-'")
        if self.type not in ROUTE_TYPES:
            raise invalid(f"type must be one of {', '.join(ROUTE_TYPES)}")
        required_arg(self.sip_server, "sip_server", _HOST, "a host name or address")
        if self.type == "sip":
            if not _DIAL_PREFIX.fullmatch(self.prefix):
                raise invalid(f"prefix {self.prefix[:40]!r} cannot be dialled: prefix must be {_DIAL_PREFIX_WHAT}")
        else:  # an SMS route's "prefix" is its handler's name (spec), never dialled
            required_arg(self.prefix, "prefix", _SMS_HANDLER, "1..64 characters without blanks (the SMS handler)")
        optional_arg(self.host, "host", _HOST, "a host name or address")
        optional_arg(self.user, "user", _TOKEN, "at most 64 characters without blanks")
        text_arg(self.password, "pass", max_len=128, required=False)
        if self.callerid not in CALLERID_TYPES:
            raise invalid("callerid must be 1 (RU only), 2 (international) or 99 (without limits)")
        optional_arg(self.balance_handler, "balance_handler", _TOKEN, "at most 64 characters without blanks")
        optional_arg(self.balance_username, "balance_username", _TOKEN, "at most 64 characters without blanks")
        text_arg(self.balance_password, "balance_password", max_len=128, required=False)
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
        raise invalid(f"type must be one of {', '.join(ROUTE_FILTERS)}")
    query = select(routes).order_by(routes.c.id)
    if route_type == "default":
        query = query.where(routes.c.is_default.is_(True) | (routes.c.type == "default"))
    elif route_type != "all":
        query = query.where(routes.c.type == route_type, routes.c.is_default.is_(False))
    async with db.begin() as conn:
        owners = await listing_owners(conn, actor, include_managed)
        if owners is not None:
            query = query.where(routes.c.owner.in_(sorted(owners)))
        rows = (await conn.execute(query)).all()
    return [_route_json(row) for row in rows]


async def set_route_state(db: Database, actor: UserRecord, route_id: int, enabled: bool) -> None:
    """updateRouteState: enable or disable a route (a disabled route serves no call)."""
    async with db.begin() as conn:
        await changeable_row(conn, actor, routes, route_id, "route")
        await conn.execute(update(routes).where(routes.c.id == route_id).values(enabled=enabled))
    log.info("route.state_changed", route_id=route_id, enabled=enabled, by=actor.username)


async def route_info(db: Database, actor: UserRecord, route_id: int) -> dict[str, Any]:
    """getRouteInfo: one route as getRoutes shows it, if `actor` may change it (its own, or
    for a reseller those of the users it manages; administrators every route)."""
    async with db.begin() as conn:
        row = await changeable_row(conn, actor, routes, route_id, "route")
    return _route_json(row)


@dataclass(frozen=True, slots=True)
class RouteChanges:
    """updateRoute's fields; None leaves a field as it is. An empty `password` or
    `balance_password` removes the stored one."""

    route: str | None = None
    prefix: str | None = None
    host: str | None = None
    user: str | None = None
    password: str | None = None
    callerid: int | None = None
    balance_handler: str | None = None
    balance_username: str | None = None
    balance_password: str | None = None

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}


def _pick(new: Any, old: Any) -> Any:
    return old if new is None else new


async def update_route(db: Database, box: SecretBox, actor: UserRecord, route_id: int, changes: RouteChanges) -> None:
    """updateRoute: change the given fields of a route `actor` may change. The route as it
    would be afterwards is checked by addRoute's rules (its type and SIP server stay);
    a new name must be free among the owner's routes."""
    given = changes.given()
    if not given:
        raise ApiError(ErrorCode.E_MISSING_ARGUMENT, "nothing to change: give route, prefix, host, user, pass, "
                       "callerid, balance_handler, balance_username and/or balance_password")  # fmt: skip
    try:
        async with db.begin() as conn:
            row = await changeable_row(conn, actor, routes, route_id, "route")
            merged = NewRoute(
                route=_pick(changes.route, row.route),
                type=row.type,
                # updateRoute does not change the SIP server: a route stored without one
                # (written outside addRoute) is not refused for it
                sip_server=row.sip_server or "-",
                prefix=_pick(changes.prefix, row.prefix),
                host=_pick(changes.host, row.host),
                user=_pick(changes.user, row.user),
                password=changes.password or "",
                callerid=_pick(changes.callerid, row.callerid),
                balance_handler=_pick(changes.balance_handler, row.balance_handler),
                balance_username=_pick(changes.balance_username, row.balance_username),
                balance_password=changes.balance_password or "",
            ).validated()
            if changes.route is not None and changes.route != row.route:
                taken = select(routes.c.id).where(
                    routes.c.owner == row.owner, routes.c.route == merged.route, routes.c.id != route_id
                )
                if (await conn.execute(taken)).first() is not None:
                    raise ApiError(ErrorCode.E_DATA_ABORT, f"{row.owner} already has a route named {merged.route}")
            values: dict[str, Any] = {
                name: getattr(merged, name)
                for name in ("route", "prefix", "host", "user", "callerid", "balance_handler", "balance_username")
                if name in given
            }
            if changes.password is not None:
                values["pass_enc"] = box.encrypt(changes.password) if changes.password else None
            if changes.balance_password is not None:
                secret = changes.balance_password
                values["balance_password_enc"] = box.encrypt(secret) if secret else None
            await conn.execute(update(routes).where(routes.c.id == route_id).values(**values))
    except IntegrityError as exc:  # a concurrent addRoute/updateRoute took the name
        raise ApiError(ErrorCode.E_DATA_ABORT, "the owner already has a route of this name") from exc
    # the field names only: never the values (passwords among them)
    log.info("route.updated", route_id=route_id, fields=sorted(given), by=actor.username)


async def delete_route(db: Database, actor: UserRecord, route_id: int) -> None:
    """deleteRoute: remove a route no tariff entry uses. A route still in a tariff is
    refused (E_DATA_ABORT, naming the tariffs): move or delete those entries first, so no
    tariff is left pricing a direction over a route that is gone. Calls already rated on
    it keep their rating (the hold carries it) and their CDRs keep the route's name."""
    try:
        async with db.begin() as conn:
            await changeable_row(conn, actor, routes, route_id, "route")
            users_of = (
                await conn.execute(
                    select(tariff_entries.c.tariff_id).where(tariff_entries.c.route_id == route_id).distinct()
                )
            ).scalars().all()  # fmt: skip
            if users_of:
                listed = ", ".join(str(t) for t in sorted(users_of)[:10])
                raise ApiError(
                    ErrorCode.E_DATA_ABORT,
                    f"route {route_id} is used by tariff entries (tariffs {listed}): move or delete them first",
                )
            await conn.execute(delete(routes).where(routes.c.id == route_id))
    except IntegrityError as exc:  # an entry took the route meanwhile (the foreign key)
        raise ApiError(ErrorCode.E_DATA_ABORT, f"route {route_id} is used by tariff entries") from exc
    log.info("route.deleted", route_id=route_id, by=actor.username)
