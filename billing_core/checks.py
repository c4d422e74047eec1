"""Argument checks shared by the provisioning services.

An empty obligatory value is E_MISSING_ARGUMENT; a value of the wrong form or range is
E_INVALID_ARGUMENT (E_WRONG_EXTENSION for a SIP login, as the spec has it). Values are
never silently corrected: a check returns the value to store or raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.errors import ApiError, ErrorCode
from billing_core.money import MONEY_QUANT
from billing_core.records import UserRecord

USER_LEVELS = (10, 11, 22, 25, 33, 44)  # the spec's User object `accesslevel` values
MAX_PRIORITY = 99
MONEY_CEILING = Decimal(1_000_000)  # no per-minute price or connection fee reaches this

EXTENSION_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def invalid(detail: str) -> ApiError:
    return ApiError(ErrorCode.E_INVALID_ARGUMENT, detail)


def missing(name: str) -> ApiError:
    return ApiError(ErrorCode.E_MISSING_ARGUMENT, f"missing argument: {name}")


async def existing_row(conn: AsyncConnection, query: Select[Any], detail: str) -> Any:
    """The first row of `query`, or E_NOT_EXIST with `detail`."""
    row = (await conn.execute(query)).first()
    if row is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, detail)
    return row


# --- numbers and choices -----------------------------------------------------------------


def check_range(name: str, value: int | Decimal, low: int | Decimal, high: int | Decimal) -> None:
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}")


def check_choice(name: str, value: int, allowed: Iterable[int]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise invalid(f"{name} must be one of {', '.join(str(a) for a in allowed)}")


def decimal_arg(
    value: Decimal, name: str, *, quant: Decimal, places: int, ceiling: Decimal = MONEY_CEILING
) -> Decimal:
    """A non-negative amount with at most `quant`'s decimal places (never silently rounded)."""
    if value < 0:
        raise invalid(f"{name} must not be negative")
    if value >= ceiling:
        raise invalid(f"{name} must be below {ceiling}")
    exact = value.quantize(quant)
    if exact != value:
        raise invalid(f"{name} has more than {places} decimal places")
    return exact


def money_arg(value: Decimal, name: str) -> Decimal:
    return decimal_arg(value, name, quant=MONEY_QUANT, places=4)


def priority_arg(value: int, name: str) -> int:
    if not 1 <= value <= MAX_PRIORITY:
        raise invalid(f"{name} must be 1..{MAX_PRIORITY}")
    return value


# --- text --------------------------------------------------------------------------------


def check_length(name: str, value: str, maximum: int) -> None:
    if len(value) > maximum:
        raise invalid(f"{name} is longer than {maximum} characters")


def required_arg(value: str, name: str, pattern: re.Pattern[str], what: str) -> str:
    if not value:
        raise missing(name)
    if not pattern.fullmatch(value):
        raise invalid(f"{name} must be {what}")
    return value


def optional_arg(value: str, name: str, pattern: re.Pattern[str], what: str) -> str:
    if value and not pattern.fullmatch(value):
        raise invalid(f"{name} must be {what}")
    return value


def text_arg(value: str, name: str, *, max_len: int, required: bool, newlines: bool = False) -> str:
    if required and not value:
        raise missing(name)
    bad = _CONTROL_BUT_NEWLINES if newlines else _CONTROL
    if len(value) > max_len or bad.search(value):
        raise invalid(f"{name} must be at most {max_len} printable characters")
    return value


# --- users and SIP accounts --------------------------------------------------------------


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
