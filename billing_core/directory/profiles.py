"""Who is calling: API keys, users and extensions, read through the cache."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from billing_core.auth.ipmask import ip_allowed
from billing_core.cache.keys import NS_PROFILES
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.db.engine import Database
from billing_core.directory.managers import walk_managers
from billing_core.directory.tables import api_keys, extension_options, sip_extensions, users
from billing_core.records import ExtensionRecord, KeyRecord, UserRecord

Generations = dict[str, int] | None

AGI_MIN_LEVEL = 50
PEER_MEMO_MAX = 1024  # callPrepare & co. need a server key of at least this level


class Profiles:
    def __init__(self, db: Database, cache: ReadThroughCache) -> None:
        self.db = db
        self.cache = cache
        self._peer_keys: dict[str, tuple[list[KeyRecord], list[KeyRecord]]] = {}

    async def key_by_hash(self, gens: Generations, key_hash: str) -> KeyRecord | None:
        async def load() -> dict[str, Any] | None:
            async with self.db.begin() as conn:
                row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
            return None if row is None else KeyRecord.from_row(row).to_json()

        return await self.cache.lookup(
            gens, NS_PROFILES, f"key:{key_hash}", load, decode=KeyRecord.from_json, encode=KeyRecord.to_json
        )

    async def server_keys(self, gens: Generations) -> list[KeyRecord]:
        """Enabled keys allowed to drive call control (level >= 50), most specific first."""

        async def load() -> list[dict[str, Any]]:
            async with self.db.begin() as conn:
                rows = (
                    await conn.execute(
                        select(api_keys)
                        .where(
                            api_keys.c.access_level >= AGI_MIN_LEVEL,
                            api_keys.c.enabled == 1,
                            api_keys.c.revoked_at.is_(None),
                        )
                        .order_by(api_keys.c.id)
                    )
                ).all()
            return [KeyRecord.from_row(row).to_json() for row in rows]

        found = await self.cache.lookup(
            gens,
            NS_PROFILES,
            "server_keys",
            load,
            decode=lambda data: [KeyRecord.from_json(d) for d in data],
            encode=lambda records: [r.to_json() for r in records],
        )
        return found or []

    async def keys_for_peer(self, gens: Generations, peer_ip: str) -> list[KeyRecord]:
        """Server keys whose source mask admits the peer: the Asterisk server's key candidates,
        lowest sufficient level first (a dedicated level-50 Asterisk key before a portal key
        that happens to admit the same address), then oldest first."""
        server_keys = await self.server_keys(gens)
        # Every FastAGI session asks this for the same few Asterisk addresses: remember the
        # answer for as long as the list of server keys it was computed from is the same.
        memo = self._peer_keys.get(peer_ip)
        if memo is not None and memo[0] is server_keys:
            return memo[1]
        admitting = [key for key in server_keys if ip_allowed(peer_ip, key.source)]
        ordered = sorted(admitting, key=lambda key: (key.access_level, key.id))
        if len(self._peer_keys) >= PEER_MEMO_MAX:
            self._peer_keys.clear()
        self._peer_keys[peer_ip] = (server_keys, ordered)
        return ordered

    async def user_by(self, gens: Generations, auth_by: str, value: str) -> UserRecord | None:
        """Find a user by the key's authorization method: username, sip_extension or id (caller ID)."""
        if not value:
            return None

        async def load() -> dict[str, Any] | None:
            # a deleted user or SIP account is not found: not by login, not by anything
            query = select(users).where(users.c.deleted_at.is_(None))
            live_ext = (sip_extensions.c.user_id == users.c.id) & sip_extensions.c.deleted_at.is_(None)
            if auth_by == "sip_extension":
                query = query.join(sip_extensions, live_ext).where(sip_extensions.c.sip_extension == value)
            elif auth_by == "id":
                query = (
                    query.outerjoin(sip_extensions, live_ext)
                    .where((users.c.callerid == value) | (sip_extensions.c.sip_callerid == value))
                    .order_by(users.c.id)
                    .limit(1)
                )
            else:
                query = query.where(users.c.username == value)
            async with self.db.begin() as conn:
                row = (await conn.execute(query)).first()
            return None if row is None else UserRecord.from_row(row).to_json()

        return await self.cache.lookup(
            gens,
            NS_PROFILES,
            f"user:{auth_by}:{value}",
            load,
            decode=UserRecord.from_json,
            encode=UserRecord.to_json,
        )

    async def extension(self, gens: Generations, sip_extension: str) -> ExtensionRecord | None:
        async def load() -> dict[str, Any] | None:
            async with self.db.begin() as conn:
                row = (
                    await conn.execute(
                        select(sip_extensions).where(
                            sip_extensions.c.sip_extension == sip_extension, sip_extensions.c.deleted_at.is_(None)
                        )
                    )
                ).first()
                if row is None:
                    return None
                options = (
                    await conn.execute(
                        select(extension_options.c.tariff_id).where(
                            extension_options.c.extension_id == row.id
                        )
                    )
                ).scalars()
                option_ids = sorted(options)
            return ExtensionRecord(
                id=row.id,
                sip_extension=row.sip_extension,
                user_id=row.user_id,
                sip_callerid=row.sip_callerid,
                sip_rates_id=row.sip_rates_id,
                sip_max_call_len=row.sip_max_call_len,
                sip_pitch_shift=row.sip_pitch_shift,
                disa_trusted_cli=row.disa_trusted_cli,
                option_ids=tuple(option_ids),
            ).to_json()

        return await self.cache.lookup(
            gens,
            NS_PROFILES,
            f"ext:{sip_extension}",
            load,
            decode=ExtensionRecord.from_json,
            encode=ExtensionRecord.to_json,
        )

    async def extension_lengths(self, gens: Generations) -> frozenset[int]:
        """The lengths local extension numbers have (one cached row set for all of them)."""

        async def load() -> list[int]:
            async with self.db.begin() as conn:
                rows = await conn.execute(
                    select(func.length(sip_extensions.c.sip_extension))
                    .where(sip_extensions.c.deleted_at.is_(None))
                    .distinct()
                )
                return sorted(int(length) for length in rows.scalars())

        found = await self.cache.lookup(
            gens, NS_PROFILES, "ext_lengths", load, decode=frozenset, encode=sorted
        )
        return found or frozenset()

    async def local_extension(self, gens: Generations, number: str) -> ExtensionRecord | None:
        """The extension a dialled number reaches, if it is one. Most numbers dialled are
        not: a number of a length no extension has is answered without a lookup, so the
        stream of new external numbers never reaches the database or fills the cache."""
        if len(number) not in await self.extension_lengths(gens):
            return None
        return await self.extension(gens, number)

    async def first_extension_of(self, gens: Generations, user_id: int) -> ExtensionRecord | None:
        async def load() -> str | None:
            async with self.db.begin() as conn:
                value = (
                    await conn.execute(
                        select(sip_extensions.c.sip_extension)
                        .where(sip_extensions.c.user_id == user_id, sip_extensions.c.deleted_at.is_(None))
                        .order_by(sip_extensions.c.id)
                        .limit(1)
                    )
                ).scalar()
            return value

        name = await self.cache.lookup(
            gens, NS_PROFILES, f"first_ext:{user_id}", load, decode=str, encode=str
        )
        return None if name is None else await self.extension(gens, name)

    async def manager_chain(self, gens: Generations, username: str) -> list[str]:
        """Managers above `username`, nearest first (managers.walk_managers over the cache)."""

        async def manager_of(name: str) -> str | None:
            user = await self.user_by(gens, "username", name)
            return None if user is None else user.manager

        return await walk_managers(username, manager_of)
