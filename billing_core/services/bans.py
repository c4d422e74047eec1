"""IP lock-out: a query with an unknown or inactive key bans its source address.

The spec locks the address "for an indefinite term"; CALLGATE_BAN_SECONDS can bound
it. Whitelisted masks (CALLGATE_BAN_WHITELIST) are never banned.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select

from billing_core.auth.ipmask import ip_allowed
from billing_core.cache.keys import NS_BANS
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.config import Settings
from billing_core.db.engine import Database
from billing_core.db.tables import bans
from billing_core.services.clock import as_utc, utcnow

log = structlog.get_logger(__name__)


def _iso(value: datetime | None) -> str | None:
    """ISO form in UTC; SQLite hands back naive datetimes, which are UTC here."""
    aware = as_utc(value)
    return None if aware is None else aware.isoformat()


class Bans:
    def __init__(self, db: Database, cache: ReadThroughCache, settings: Settings) -> None:
        self.db = db
        self.cache = cache
        self.settings = settings

    async def _active(self, gens: dict[str, int] | None) -> list[tuple[str, str | None]]:
        async def load() -> list[list[str | None]]:
            async with self.db.begin() as conn:
                rows = (await conn.execute(select(bans.c.ip, bans.c.expires_at))).all()
            return [[row.ip, _iso(row.expires_at)] for row in rows]

        found = await self.cache.lookup(
            gens,
            NS_BANS,
            "bans",
            load,
            decode=lambda rows: [(r[0], r[1]) for r in rows],
            encode=lambda rows: [list(r) for r in rows],
        )
        return found or []

    async def is_banned(self, gens: dict[str, int] | None, ip: str) -> bool:
        if ip_allowed(ip, ",".join(self.settings.ban_whitelist)):
            return False
        now = utcnow()
        for banned_ip, expires in await self._active(gens):
            if banned_ip == ip and (expires is None or datetime.fromisoformat(expires) > now):
                return True
        return False

    async def ban(self, ip: str, *, reason: str, source: str = "auto") -> bool:
        """Ban `ip`; returns False when it is whitelisted."""
        if ip_allowed(ip, ",".join(self.settings.ban_whitelist)):
            log.info("bans.whitelisted", ip=ip, reason=reason)
            return False
        now = utcnow()
        expires = now + timedelta(seconds=self.settings.ban_seconds) if self.settings.ban_seconds else None
        async with self.db.begin() as conn:
            await conn.execute(delete(bans).where(bans.c.ip == ip))
            await conn.execute(
                bans.insert().values(ip=ip, source=source, reason=reason, created_at=now, expires_at=expires)
            )
        await self.cache.invalidate(NS_BANS)
        log.warning("bans.banned", ip=ip, reason=reason, expires_at=expires.isoformat() if expires else None)
        return True

    async def unban(self, ip: str) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(delete(bans).where(bans.c.ip == ip))
        await self.cache.invalidate(NS_BANS)
        return bool(result.rowcount)

    async def list(self) -> list[dict[str, Any]]:
        async with self.db.begin() as conn:
            rows = (await conn.execute(select(bans).order_by(bans.c.id))).all()
        return [
            {
                "ip": row.ip,
                "source": row.source,
                "reason": row.reason,
                "created_at": _iso(row.created_at),
                "expires_at": _iso(row.expires_at),
            }
            for row in rows
        ]
