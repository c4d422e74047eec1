"""authorizeRealm (both backends): the MD5 of "${API-key}${Asterisk IP-address}${API-key
name}" against every enabled key, kept encrypted since migration 0018; keys made before it
still authenticate, answer false until sealed, and a real upgrade from 0011 keeps them."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select, text, update

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.auth.secrets_store import SecretBox, api_key_hash
from billing_core.container import Services
from billing_core.db.engine import Database, create_engine
from billing_core.directory.keys import realm_key_matches, seal_key
from billing_core.directory.tables import api_keys
from billing_core.errors import ErrorCode
from tests.factories import make_key, make_user
from tests.rating_world import credentials
from tests.test_migrations import _alembic, scratch_url

__all__ = ["scratch_url"]  # the empty-database fixture of tests/test_migrations.py

PBX = "10.0.0.7"


def md5(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()


async def _realm(dispatcher: Dispatcher, key: str, source: str, auth: str) -> Outcome:
    return await dispatcher.call("authorizeRealm", {"source": source, "auth": auth}, credentials(key, None))


async def test_the_md5_of_key_address_and_name(services: Services, dispatcher: Dispatcher) -> None:
    asterisk = await make_key(services, level=50, name="main-pbx")
    partner = await make_key(services, level=0, source="10.0.0.*", name="partner-realm")
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{partner}{PBX}partner-realm"))).value is True
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{partner}{PBX}partner-realm").upper())).value is True
    for wrong in (md5(f"{partner}{PBX}main-pbx"), md5(f"{partner}10.0.0.8partner-realm"),
                  md5(f"{partner}partner-realm{PBX}"), md5(f"{partner[:-1]}x{PBX}partner-realm")):  # fmt: skip
        assert (await _realm(dispatcher, asterisk, PBX, wrong)).value is False
    # the right MD5 for an address the key does not admit; a disabled key
    outside = "192.0.2.1"
    assert (await _realm(dispatcher, asterisk, outside, md5(f"{partner}{outside}partner-realm"))).value is False
    async with services.db.begin() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.name == "partner-realm").values(enabled=0))
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{partner}{PBX}partner-realm"))).value is False


async def test_keys_are_kept_encrypted_not_in_clear(services: Services) -> None:
    key = await make_key(services, level=0, name="partner-realm")
    async with services.db.begin() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.name == "partner-realm"))).one()
    assert row.key_hash == api_key_hash(key) and row.key_enc and key not in row.key_enc
    assert services.box.decrypt(row.key_enc) == key


async def test_bad_input_and_access(services: Services, dispatcher: Dispatcher) -> None:
    asterisk = await make_key(services, level=50, name="main-pbx")
    portal = await make_key(services, level=33, name="portal")
    await make_user(services, "ops", accesslevel=33)
    good = md5(f"{asterisk}{PBX}main-pbx")
    for source, auth in (("pbx1", good), ("", good), (PBX, "xyz"), (PBX, good + "0")):
        outcome = await _realm(dispatcher, asterisk, source, auth)
        assert outcome.error is not None and outcome.error.code in (
            ErrorCode.E_INVALID_ARGUMENT, ErrorCode.E_MISSING_ARGUMENT), (source, auth)  # fmt: skip
    below = await dispatcher.call("authorizeRealm", {"source": PBX, "auth": good, "login": "ops"},
                                  credentials(portal, None))  # fmt: skip
    assert below.error is not None and below.error.code is ErrorCode.E_INSUFFICIENT_ACCESS


async def test_a_key_made_before_0018_answers_false_until_sealed(services: Services, dispatcher: Dispatcher) -> None:
    asterisk = await make_key(services, level=50, name="main-pbx")
    old = await make_key(services, level=50, source="10.0.0.*", name="old-realm")
    async with services.db.begin() as conn:  # what migration 0018 leaves of a key made before it
        await conn.execute(update(api_keys).where(api_keys.c.name == "old-realm").values(key_enc=None))
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{old}{PBX}old-realm"))).value is False
    # it still authenticates as before (its hash is untouched)
    info = await dispatcher.call("authorizeRealm", {"source": PBX, "auth": "0" * 32},
                                 Credentials(peer_ip=PBX, transport="test", apikey=old))  # fmt: skip
    assert (info.error, info.value) == (None, False)
    assert await seal_key(services.db, services.box, "not-a-key-at-all-000") is None
    assert await seal_key(services.db, services.box, old) == "old-realm"
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{old}{PBX}old-realm"))).value is True


async def test_an_upgrade_from_0011_keeps_the_keys(scratch_url: str, services: Services) -> None:
    await _alembic(scratch_url, "upgrade", "0011")
    key = "0123456789abcdef0123456789abcdef"
    db = Database(create_engine(scratch_url), timeout_s=5.0)
    try:
        async with db.begin() as conn:
            await conn.execute(
                text("INSERT INTO api_keys (name, key_hash, key_hint, auth_by, source, access_level, "
                     "allowed_methods, secure_only, enabled, owner, dnsname, created_at) VALUES "
                     "('old-realm', :hash, '0123', 'username', '10.0.0.*', 50, '', 0, 1, 'admin', '', "
                     "CURRENT_TIMESTAMP)"),
                {"hash": api_key_hash(key)},
            )  # fmt: skip
        await _alembic(scratch_url, "upgrade", "head")
        async with db.begin() as conn:
            row: Any = (await conn.execute(select(api_keys))).one()
        assert (row.key_hash, row.key_enc) == (api_key_hash(key), None)
        box: SecretBox = services.box
        auth = md5(f"{key}{PBX}old-realm")
        assert await realm_key_matches(db, box, PBX, auth) is None
        assert await seal_key(db, box, key) == "old-realm"
        assert await realm_key_matches(db, box, PBX, auth) == "old-realm"
    finally:
        await db.engine.dispose()


async def test_a_key_given_a_new_secret_by_update_key_is_a_realm_with_it(
    services: Services, dispatcher: Dispatcher
) -> None:
    asterisk = await make_key(services, level=50, name="main-pbx")
    admin = await make_key(services, level=95, name="portal")
    old = await make_key(services, level=0, source="10.0.0.*", name="partner-realm")
    new = "Nw" + "7kQ2xZ9mR4tB8vL1pH6sD3fJ5gC0yW" * 2
    changed = await dispatcher.call(
        "updateKey", {"login": "admin", "name": "partner-realm", "apikey": new}, credentials(admin, None)
    )
    assert changed.error is None, changed.error
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{new}{PBX}partner-realm"))).value is True
    assert (await _realm(dispatcher, asterisk, PBX, md5(f"{old}{PBX}partner-realm"))).value is False
