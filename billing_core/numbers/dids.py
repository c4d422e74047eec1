"""Direct numbers (DIDs): creation, the cached DID record with its rule chain, ownership.

A DID and its rules are read on the call path (resolveDIDRule), so they are one cache
entry in NS_PROFILES (`did:<number>`); every write that touches them is registered with
`invalidates=(NS_PROFILES,)`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.cache.keys import NS_PROFILES
from billing_core.clock import WIRE_TIME_FORMAT, as_utc
from billing_core.directory.ownership import reaches
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger.context import LedgerContext
from billing_core.money import quantize_money
from billing_core.numbers.tables import did_rules, dids
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

Generations = dict[str, int] | None

DID_PATTERN = re.compile(r"[0-9]{1,32}")  # dids.did is String(32)
# What a new or looked-up number may be (docs/decisions.md, "DID rent"): ASCII digits,
# a leading "+" dropped, 3 to 32 of them.
NUMBER_PATTERN = re.compile(r"[0-9]{3,32}")


@dataclass(frozen=True, slots=True)
class DIDRule:
    """One row of a DID's rule chain; `position` is the spec's rule number (1-based)."""

    position: int
    source: str
    pattern: str
    policy: str
    sms_action: str
    sms_destination: str
    action: str
    server: str
    destination: str
    callerid: str
    timeout: int | None
    condition: str
    input: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DIDRule:
        return cls(**data)

    @classmethod
    def from_row(cls, row: Any) -> DIDRule:
        """From a did_rules row: every field is the column of the same name."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class DIDRecord:
    """A DID with its rules ordered by position (what the cache holds)."""

    id: int
    did: str
    owner: str
    enabled: bool
    expiration: str | None  # ISO 8601 in UTC
    rules: tuple[DIDRule, ...]

    def in_service(self, now: datetime) -> bool:
        """Enabled and not past its rent expiration."""
        if not self.enabled:
            return False
        return self.expiration is None or datetime.fromisoformat(self.expiration) > now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "did": self.did,
            "owner": self.owner,
            "enabled": self.enabled,
            "expiration": self.expiration,
            "rules": [rule.to_json() for rule in self.rules],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DIDRecord:
        return cls(
            id=data["id"],
            did=data["did"],
            owner=data["owner"],
            enabled=data["enabled"],
            expiration=data["expiration"],
            rules=tuple(DIDRule.from_json(rule) for rule in data["rules"]),
        )


def valid_did(did: str) -> bool:
    return DID_PATTERN.fullmatch(did) is not None


def without_plus(value: str) -> str:
    """A number as given, E.164's leading "+" dropped (callgate's numbers are digits)."""
    return value.strip().removeprefix("+")


def normalize_did(value: str) -> str:
    """A number as the methods take it: digits only, a leading "+" dropped, 3 to 32 digits
    (E_INVALID_ARGUMENT otherwise)."""
    number = without_plus(value)
    if NUMBER_PATTERN.fullmatch(number) is None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "did must be 3 to 32 digits (a leading + is dropped)")
    return number


async def did_record(services: LedgerContext, gens: Generations, did: str) -> DIDRecord | None:
    """The DID and its rule chain, read through the cache (None when there is no such DID)."""
    if not valid_did(did):
        return None  # never cache (nor query) garbage numbers

    async def load() -> dict[str, Any] | None:
        async with services.db.begin() as conn:
            row = (
                await conn.execute(select(dids).where(dids.c.did == did, dids.c.deleted_at.is_(None)))
            ).first()
            if row is None:
                return None
            rules = (
                await conn.execute(
                    select(did_rules).where(did_rules.c.did_id == row.id).order_by(did_rules.c.position)
                )
            ).all()
        expiration = as_utc(row.expiration)
        return DIDRecord(
            id=row.id,
            did=row.did,
            owner=row.owner,
            enabled=bool(row.enabled),
            expiration=None if expiration is None else expiration.isoformat(),
            rules=tuple(DIDRule.from_row(rule) for rule in rules),
        ).to_json()

    return await services.cache.lookup(
        gens, NS_PROFILES, f"did:{did}", load, decode=DIDRecord.from_json, encode=DIDRecord.to_json
    )


async def require_managed_did(services: LedgerContext, gens: Generations, actor: UserRecord, did: str) -> DIDRecord:
    """The DID for an API user that manages it, else E_NOT_EXIST / E_DOES_NOT_BELONG_TO_YOU."""
    record = await did_record(services, gens, did)
    if record is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such DID")
    if not await reaches(services.profiles, gens, actor, record.owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the DID belongs to another user")
    return record


def parse_expiration(value: str) -> datetime | None:
    """'YYYY-MM-DD HH:MM:SS' (taken as UTC) or empty for no expiration."""
    if not value:
        return None
    try:
        return datetime.strptime(value, WIRE_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "expiration must be YYYY-MM-DD HH:MM:SS") from None


async def add_did(
    services: LedgerContext,
    gens: Generations,
    actor: UserRecord,
    *,
    did: str,
    owner: str,
    comment: str,
    cost: Decimal,
    expiration: str,
) -> None:
    """addDID: a new direct number owned by `owner` (the actor or a user it manages). A
    number deleted or released before is given its row back (revive_did)."""
    did = normalize_did(did)
    if cost < 0:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "cost must not be negative")
    expires = parse_expiration(expiration)
    owner_user = await services.profiles.user_by(gens, "username", owner)
    if owner_user is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such owner")
    if not await reaches(services.profiles, gens, actor, owner):
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "the owner is not one of your users")
    try:
        async with services.db.begin() as conn:
            values = {"owner": owner, "comment": comment, "cost": quantize_money(cost), "expiration": expires}
            await place_did(conn, did, values)
    except IntegrityError:
        # Two concurrent addDID of the same number: the unique constraint decides.
        raise ApiError(ErrorCode.E_DATA_ABORT, "the DID already exists") from None
    log.info("dids.added", did=did, owner=owner, by=actor.username)


async def place_did(conn: AsyncConnection, did: str, values: dict[str, Any]) -> int:
    """Give `did` to an owner in the caller's transaction: a new row, or the row of a number
    deleted or released before (its rule chain goes, its paid periods stay with their owner).
    E_DATA_ABORT when the number is someone's now; the row's id."""
    row = (await conn.execute(select(dids.c.id, dids.c.deleted_at).where(dids.c.did == did))).first()
    if row is not None and row.deleted_at is None:
        raise ApiError(ErrorCode.E_DATA_ABORT, "the DID already exists")
    fresh = {
        "pool_id": None, "auto_renew": True, "renew_notify": False, "unpaid_since": None, "enabled": True,
        "comment": "", "deleted_at": None, "deleted_reason": "", **values,
    }  # fmt: skip
    if row is None:
        result = await conn.execute(dids.insert().values(did=did, **fresh).returning(dids.c.id))
        return int(result.scalar_one())
    await conn.execute(delete(did_rules).where(did_rules.c.did_id == row.id))
    await conn.execute(update(dids).where(dids.c.id == row.id).values(**fresh))
    return int(row.id)
