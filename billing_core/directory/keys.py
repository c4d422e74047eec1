"""API keys: creation and listing (the key itself is shown once, stored hashed, and also
encrypted for authorizeRealm, whose MD5 is computed over the key itself: realm_key_matches).

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

from sqlalchemy import select

from billing_core.auth.ipmask import ip_allowed, parse_masks, valid_mask
from billing_core.auth.secrets_store import SecretBox, api_key_hash, new_api_key
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
    masks = parse_masks(source)
    if not masks or not all(valid_mask(m) for m in masks):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "source must be IP addresses or masks like 178.1.1.*")
    if not 0 <= access_level <= 99:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "access level must be 0..99")
    key = apikey or generate_key()
    problem = key_strength_problem(key)
    if problem is not None:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, problem)
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
                source=",".join(masks),
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


async def list_keys(db: Database, *, owner: str | None = None) -> list[dict[str, Any]]:
    query = select(api_keys).order_by(api_keys.c.id)
    if owner is not None:
        query = query.where(api_keys.c.owner == owner)
    async with db.begin() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "id": row.id,
            "name": row.name,
            "apikey": f"{row.key_hint}…",
            "auth_by": row.auth_by,
            "source": row.source,
            "accessLevel": row.access_level,
            "default_user": row.default_user or "",
            "allowed_methods": row.allowed_methods,
            "secure_only": row.secure_only,
            "enabled": row.enabled,
            "owner": row.owner,
            "dnsname": row.dnsname,
        }
        for row in rows
    ]


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
