"""Immutable records the registry and services pass around (what the cache holds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    name: str
    key_hint: str
    auth_by: str
    source: str
    access_level: int
    default_user: str | None
    allowed_methods: tuple[str, ...]
    secure_only: int
    enabled: int
    owner: str
    dnsname: str

    @property
    def is_server_key(self) -> bool:
        return self.access_level > 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowed_methods"] = list(self.allowed_methods)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRecord:
        return cls(**{**data, "allowed_methods": tuple(data["allowed_methods"])})

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            id=row.id,
            name=row.name,
            key_hint=row.key_hint,
            auth_by=row.auth_by,
            source=row.source,
            access_level=row.access_level,
            default_user=row.default_user,
            allowed_methods=tuple(m for m in row.allowed_methods.replace(" ", ",").split(",") if m),
            secure_only=row.secure_only,
            enabled=0 if getattr(row, "revoked_at", None) is not None else row.enabled,  # revokeKey
            owner=row.owner,
            dnsname=row.dnsname,
        )


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user profile without money (balances are read from the database, never cached)."""

    id: int
    username: str
    password_hash: str | None
    manager: str | None
    accesslevel: int
    active: int
    account_id: int
    currency: str
    allowed_call_len: int
    rates_id: int | None
    callerid: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserRecord:
        return cls(**data)

    @classmethod
    def from_row(cls, row: Any) -> UserRecord:
        return cls(
            id=row.id,
            username=row.username,
            password_hash=row.password_hash,
            manager=row.manager,
            accesslevel=row.accesslevel,
            active=row.active,
            account_id=row.account_id,
            currency=row.currency,
            allowed_call_len=row.allowed_call_len,
            rates_id=row.rates_id,
            callerid=row.callerid,
        )


@dataclass(frozen=True, slots=True)
class ExtensionRecord:
    id: int
    sip_extension: str
    user_id: int
    sip_callerid: str
    sip_rates_id: int | None
    sip_max_call_len: int
    sip_pitch_shift: int
    disa_trusted_cli: str
    option_ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["option_ids"] = list(self.option_ids)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExtensionRecord:
        return cls(**{**data, "option_ids": tuple(data["option_ids"])})
