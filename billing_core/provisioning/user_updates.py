"""updateUser: who may set which field of a user, the fields' ranges, and the update."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import update

from billing_core.auth.secrets_store import hash_password
from billing_core.checks import (
    check_choice,
    check_grantable_level,
    check_length,
    check_md5,
    check_range,
    invalid,
)
from billing_core.directory.ownership import is_admin
from billing_core.directory.tables import users
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.account_access import account_relation
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.currency import currency
from billing_core.money import ZERO
from billing_core.rating.tariffs import visible_tariff
from billing_core.records import UserRecord

Generations = dict[str, int] | None

ACTIVE_VALUES = (-1, 0, 1, 2, 3, 99)


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
    services: LedgerContext, gens: Generations, caller: UserRecord, target: UserRecord, changes: Mapping[str, Any]
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
