"""API keys: creation, listing, change and revocation (the key itself is shown once, stored
hashed, and also encrypted for authorizeRealm, whose MD5 is computed over the key itself:
realm_key_matches).

A revoked key (revokeKey) keeps its row and its hash, so the same secret can never be
added again, and is hidden from getKey/getKeys; it answers like an unknown key.

A key given to addKey must be strong enough (check_key_strength): it is the only secret
of a server key, and a key of 32 × `c` was once accepted. The rule is a floor, not a
proof: at least MIN_KEY_LEN characters, at least MIN_KEY_BITS bits by the Shannon
estimate of its own characters (length × entropy per character), and not a repetition
of a shorter string. A generated key (128 random bits as hex) always passes: new_api_key
draws again in the (vanishingly rare) case that one would not.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.auth.ipmask import ip_allowed, parse_masks, valid_mask
from billing_core.auth.secrets_store import SecretBox, api_key_hash, new_api_key
from billing_core.clock import utcnow
from billing_core.db.engine import Database
from billing_core.directory.tables import api_keys
from billing_core.errors import ApiError, ErrorCode

AUTH_METHODS = ("username", "sip_extension", "id")
# The spec's other values ("id,username,sip_extension,msisdn,iccid..."): a user is found by
# the MSISDN or ICCID of a SIM card, and callgate has no SIM cards yet.
AUTH_METHODS_NEEDING_SIM_CARDS = ("msisdn", "iccid")
MIN_KEY_LEN = 16
MAX_KEY_LEN = 128
MIN_KEY_BITS = 64


def key_strength_problem(key: str) -> str | None:
    """Why `key` is too weak to be an API key, or None. Never quotes the key."""
    if not MIN_KEY_LEN <= len(key) <= MAX_KEY_LEN:
        return f"apikey must be {MIN_KEY_LEN}..{MAX_KEY_LEN} characters"
    counts = Counter(key)
    bits = -sum(n * math.log2(n / len(key)) for n in counts.values())
    if bits < MIN_KEY_BITS:
        return f"apikey is too weak: use more varied characters (about {MIN_KEY_BITS} bits at least)"
    if key in (key + key)[1:-1]:  # true exactly when key is a shorter string repeated
        return "apikey is too weak: it repeats a shorter string"
    return None


def check_auth_by(auth_by: str) -> None:
    """A key's `auth_by` must be one callgate can authorize by (addKey, updateKey, the CLI).

    The spec's msisdn and iccid are well-formed requests this server cannot carry out
    (E_UNDEFINED_INSTRUCTION, "Method can't be executed"); anything else is not an
    authorization method at all (E_INVALID_ARGUMENT)."""
    if auth_by in AUTH_METHODS:
        return
    if auth_by in AUTH_METHODS_NEEDING_SIM_CARDS:
        raise ApiError(
            ErrorCode.E_UNDEFINED_INSTRUCTION,
            f"auth_by={auth_by} finds users by their SIM cards, which callgate does not have yet; "
            f"use one of {', '.join(AUTH_METHODS)}",
        )
    raise ApiError(ErrorCode.E_INVALID_ARGUMENT, f"auth_by must be one of {', '.join(AUTH_METHODS)}")


def generate_key() -> str:
    while True:
        key = new_api_key()
        if key_strength_problem(key) is None:
            return key


async def add_key(
    db: Database,
    box: SecretBox,
    *,
    name: str,
    access_level: int,
    source: str,
    owner: str,
    auth_by: str = "username",
    default_user: str | None = None,
    allowed_methods: str = "",
    secure_only: int = 0,
    apikey: str | None = None,
) -> str:
    """Create a key and return it in clear (the only time it is seen)."""
    check_auth_by(auth_by)
    stored_source = check_source(source)
    check_access_level(access_level)
    key = apikey or generate_key()
    check_new_secret(key)
    async with db.begin() as conn:
        exists = (await conn.execute(select(api_keys.c.id).where(api_keys.c.key_hash == api_key_hash(key)))).first()
        if exists is not None:
            raise ApiError(ErrorCode.E_DATA_ABORT, "this key already exists")
        await conn.execute(
            api_keys.insert().values(
                name=name,
                key_hash=api_key_hash(key),
                key_enc=box.encrypt(key),
                key_hint=key[:4],
                auth_by=auth_by,
                source=stored_source,
                access_level=access_level,
                default_user=default_user or None,
                allowed_methods=allowed_methods,
                secure_only=secure_only,
                enabled=1,
                owner=owner,
                created_at=datetime.now(UTC),
            )
        )
    return key


def check_source(source: str) -> str:
    """A key's `source`: IP addresses or masks, comma-separated; the stored form."""
    masks = parse_masks(source)
    if not masks or not all(valid_mask(m) for m in masks):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "source must be IP addresses or masks like 178.1.1.*")
    return ",".join(masks)


def check_access_level(access_level: int) -> None:
    if not 0 <= access_level <= 99:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "access level must be 0..99")


def check_new_secret(key: str) -> None:
    problem = key_strength_problem(key)
    if problem is not None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, problem)


async def list_keys(db: Database, *, owner: str | None = None) -> list[dict[str, Any]]:
    """Live (not revoked) keys, of `owner` or (None) of everyone."""
    query = select(api_keys).where(api_keys.c.revoked_at.is_(None)).order_by(api_keys.c.id)
    if owner is not None:
        query = query.where(api_keys.c.owner == owner)
    async with db.begin() as conn:
        rows = (await conn.execute(query)).all()
    return [key_json(row) for row in rows]


async def named_key(conn: AsyncConnection, name: str, *, owner: str | None) -> Any:
    """The live key called `name` among those of `owner` (None: everyone's, a master
    administrator). Names are not unique (addKey never required it): two live keys of
    one name that the caller sees are E_DATA_ABORT, never a guess."""
    query = select(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
    if owner is not None:
        query = query.where(api_keys.c.owner == owner)
    rows = (await conn.execute(query.order_by(api_keys.c.id))).all()
    if not rows:
        raise ApiError(ErrorCode.E_NOT_EXIST, "no such API key")
    if len(rows) > 1:
        raise ApiError(ErrorCode.E_DATA_ABORT, "several keys have this name: rename or revoke one")
    return rows[0]


async def update_key(
    db: Database, box: SecretBox, name: str, *, owner: str | None, values: dict[str, Any]
) -> None:
    """Change the named key's columns (checked by the caller of this); a new `apikey`
    replaces the secret (stored hashed, and encrypted for authorizeRealm; the old one stops
    working)."""
    secret = values.pop("apikey", None)
    async with db.begin() as conn:
        row = await named_key(conn, name, owner=owner)
        if secret is not None:
            check_new_secret(secret)
            taken = await conn.execute(select(api_keys.c.id).where(api_keys.c.key_hash == api_key_hash(secret)))
            if taken.first() is not None:
                raise ApiError(ErrorCode.E_DATA_ABORT, "this key already exists")
            values |= {"key_hash": api_key_hash(secret), "key_hint": secret[:4], "key_enc": box.encrypt(secret)}
        await conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(**values))


async def revoke_key(db: Database, name: str, *, owner: str | None) -> None:
    async with db.begin() as conn:
        row = await named_key(conn, name, owner=owner)
        await revoke_where(conn, api_keys.c.id == row.id)


async def revoke_where(conn: AsyncConnection, where: ColumnElement[bool]) -> None:
    """Revoke the live keys matching `where` (revokeKey; deleteUser, for the keys the user owns)."""
    await conn.execute(
        update(api_keys).where(where, api_keys.c.revoked_at.is_(None)).values(enabled=0, revoked_at=utcnow())
    )


def key_json(row: Any) -> dict[str, Any]:
    """A key as getKey and getKeys show it: its hint in place of the key."""
    return {
        "id": row.id,
        "name": row.name,
        "apikey": f"{row.key_hint}…",
        "key": f"{row.key_hint}…",
        "auth_by": row.auth_by,
        "source": row.source,
        "accessLevel": row.access_level,
        "default_user": row.default_user or "",
        "allowed_methods": row.allowed_methods,
        "secure_only": row.secure_only,
        "enabled": row.enabled,
        "owner": row.owner,
        "dnsname": row.dnsname,
        "maintenance": "",
    }


async def seal_key(db: Database, box: SecretBox, key: str) -> str | None:
    """Give a key made before keys were kept encrypted its ciphertext: the key is checked
    against its stored hash (so only its holder can do it). The key's name, or None when no
    key has this hash."""
    async with db.begin() as conn:
        row = (await conn.execute(select(api_keys.c.id, api_keys.c.name).where(
            api_keys.c.key_hash == api_key_hash(key)))).first()  # fmt: skip
        if row is None:
            return None
        await conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(key_enc=box.encrypt(key)))
    return str(row.name)


def realm_auth(key: str, source: str, name: str) -> str:
    """authorizeRealm's `auth`: MD5 of "${API-key}${Asterisk IP-address}${API-key name}"."""
    return hashlib.md5(f"{key}{source}{name}".encode()).hexdigest()


async def realm_key_matches(db: Database, box: SecretBox, source: str, auth: str) -> str | None:
    """The name of the enabled key whose MD5 with `source` is `auth` and whose allowed
    addresses admit `source`, or None. Keys without ciphertext (made before migration
    0018 and not sealed) never match."""
    query = select(api_keys.c.name, api_keys.c.key_enc, api_keys.c.source).where(
        api_keys.c.enabled == 1, api_keys.c.key_enc.is_not(None)
    )
    async with db.begin() as conn:
        rows = (await conn.execute(query.order_by(api_keys.c.id))).all()
    wanted = auth.strip().lower()
    for row in rows:
        key = box.decrypt(row.key_enc)
        if key and hmac.compare_digest(realm_auth(key, source, row.name), wanted) and ip_allowed(source, row.source):
            return str(row.name)
    return None
