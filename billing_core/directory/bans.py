"""IP lock-out: a query with an unknown or inactive key bans its source address.

The spec locks the address "for an indefinite term"; here a ban lasts
CALLGATE_BAN_SECONDS (an hour by default; 0 = the spec's indefinite term), because one
mistyped key from an operator's own host must not lock it out until someone notices.

Never banned (the spec's whitelist; docs/decisions.md, "Bans and the Asterisk hosts (issue 9, item 13)"):
- the masks of CALLGATE_BAN_WHITELIST;
- the addresses of enabled call-control keys (level >= 50: the Asterisk hosts), when
  the key's mask names at most SERVER_MASK_MAX_ADDRESSES addresses (one host, or a /24
  such as 10.0.0.*). A broader mask (*.*.*.*, 10.0.0.0/8) would whitelist the world or
  a whole network, so its addresses can still be banned over HTTP; list the Asterisk
  hosts in CALLGATE_BAN_WHITELIST then. FastAGI is never subject to bans
  (billing_core.api.dispatch): it carries no key to guess.
- the `whitelist` rows of the table (banIP with `source=whitelist`; a target may be a mask).
A whitelisted address is also never found banned, so a ban recorded before its key
existed (or before this rule) no longer applies to it.

A ban belongs to its source (docs/ami.md, "Bans"): `auto` for callgate's own lock-outs,
`manual` for the CLI's, an Asterisk server's name for banIP's. The HTTP door refuses an
address any source bans; `callgate firewall export --server NAME` writes one server's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update

from billing_core.auth.ipmask import ip_allowed, ip_matches, mask_addresses, parse_masks
from billing_core.cache.keys import NS_BANS
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.clock import as_utc, utcnow
from billing_core.config import Settings
from billing_core.db.engine import Database
from billing_core.directory.profiles import Generations, Profiles
from billing_core.directory.tables import bans

log = structlog.get_logger(__name__)

SERVER_MASK_MAX_ADDRESSES = 256
WHITELIST = "whitelist"  # the source of whitelist rows
AUTO = "auto"  # callgate's own lock-outs


def _iso(value: datetime | None) -> str | None:
    """ISO form in UTC; SQLite hands back naive datetimes, which are UTC here."""
    aware = as_utc(value)
    return None if aware is None else aware.isoformat()


class Bans:
    def __init__(
        self, db: Database, cache: ReadThroughCache, settings: Settings, profiles: Profiles | None = None
    ) -> None:
        self.db = db
        self.cache = cache
        self.settings = settings
        self.profiles = profiles or Profiles(db, cache)

    async def whitelisted(self, gens: Generations, ip: str) -> bool:
        """On the whitelist: configured, or the address of a call-control key (see above)."""
        if ip_allowed(ip, ",".join(self.settings.ban_whitelist)):
            return True
        listed = [target for target, _, source in await self._active(gens) if source == WHITELIST]
        if listed and ip_allowed(ip, ",".join(listed)):
            return True
        for key in await self.profiles.server_keys(gens):
            for mask in parse_masks(key.source):
                if mask_addresses(mask) <= SERVER_MASK_MAX_ADDRESSES and ip_matches(ip, mask):
                    return True
        return False

    async def _active(self, gens: dict[str, int] | None) -> list[tuple[str, str | None, str]]:
        """(target, expires_at ISO or None, source) of every row, through the cache."""

        async def load() -> list[list[str | None]]:
            async with self.db.begin() as conn:
                rows = (await conn.execute(select(bans.c.ip, bans.c.expires_at, bans.c.source))).all()
            return [[row.ip, _iso(row.expires_at), row.source] for row in rows]

        found = await self.cache.lookup(
            gens,
            NS_BANS,
            "bans",
            load,
            decode=lambda rows: [(r[0], r[1], r[2]) for r in rows],
            encode=lambda rows: [list(r) for r in rows],
        )
        return found or []

    async def is_banned(self, gens: dict[str, int] | None, ip: str) -> bool:
        now = utcnow()
        for banned_ip, expires, source in await self._active(gens):
            if source == WHITELIST or banned_ip != ip:
                continue
            if expires is None or datetime.fromisoformat(expires) > now:
                return not await self.whitelisted(gens, ip)
        return False

    async def ban(self, ip: str, *, reason: str, source: str = AUTO, gens: Generations = None) -> bool:
        """Ban `ip` for `source` (again: from now); False when it is whitelisted."""
        if await self.whitelisted(gens, ip):
            log.info("bans.whitelisted", ip=ip, reason=reason)
            return False
        now = utcnow()
        expires = now + timedelta(seconds=self.settings.ban_seconds) if self.settings.ban_seconds else None
        await self._put(source, ip, reason, now, expires)
        log.warning("bans.banned", ip=ip, source=source, reason=reason,
                    expires_at=expires.isoformat() if expires else None)  # fmt: skip
        return True

    async def allow(self, target: str, *, reason: str) -> None:
        """A `whitelist` row: `target` (an address or mask) is never banned from now on."""
        await self._put(WHITELIST, target, reason, utcnow(), None)
        log.info("bans.whitelist_added", target=target, reason=reason)

    async def _put(self, source: str, ip: str, reason: str, now: datetime, expires: datetime | None) -> None:
        async with self.db.begin() as conn:
            await conn.execute(delete(bans).where(bans.c.ip == ip, bans.c.source == source))
            await conn.execute(
                bans.insert().values(ip=ip, source=source, reason=reason, created_at=now, expires_at=expires)
            )
        await self.cache.invalidate(NS_BANS)

    async def unban(self, ip: str) -> bool:
        """Every source's ban of `ip` (the CLI); whitelist rows stay."""
        return await self._delete(bans.c.ip == ip, bans.c.source != WHITELIST)

    async def remove(self, ban_id: int) -> bool:
        """One row by id (unbanIP): a ban, or a whitelist row."""
        return await self._delete(bans.c.id == ban_id)

    async def flush(self, sources: list[str] | None) -> int:
        """Every ban (not the whitelist) of `sources`; None: of every source (flushAllBans)."""
        conditions = [bans.c.source != WHITELIST]
        if sources is not None:
            conditions.append(bans.c.source.in_(sources))
        async with self.db.begin() as conn:
            result = await conn.execute(delete(bans).where(*conditions))
        await self.cache.invalidate(NS_BANS)
        return int(result.rowcount or 0)

    async def set_permanent(self, ban_id: int, permanent: bool) -> bool:
        """updateBanPermanent: no end (true), or the configured term from now (false)."""
        term = self.settings.ban_seconds or 3600  # "temporary" must end even when bans are indefinite
        expires = None if permanent else utcnow() + timedelta(seconds=term)
        async with self.db.begin() as conn:
            result = await conn.execute(update(bans).where(bans.c.id == ban_id).values(expires_at=expires))
        await self.cache.invalidate(NS_BANS)
        return bool(result.rowcount)

    async def _delete(self, *conditions: Any) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(delete(bans).where(*conditions))
        await self.cache.invalidate(NS_BANS)
        return bool(result.rowcount)

    async def list(self, sources: list[str] | None = None) -> list[dict[str, Any]]:
        """Every row (`sources`: only theirs and the whitelist), oldest first."""
        query = select(bans).order_by(bans.c.id)
        if sources is not None:
            query = query.where(bans.c.source.in_([*sources, WHITELIST]))
        async with self.db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "id": row.id,
                "ip": row.ip,
                "source": row.source,
                "reason": row.reason,
                "created_at": _iso(row.created_at),
                "expires_at": _iso(row.expires_at),
            }
            for row in rows
        ]
