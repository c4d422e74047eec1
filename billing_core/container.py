"""The services one process runs, built once at start-up and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from billing_core.asterisk.connection import AmiTimings
from billing_core.asterisk.service import AmiService
from billing_core.auth.secrets_store import SecretBox
from billing_core.cache.backend import create_backend
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.cache.sessions import MemorySessions, SessionStore, create_sessions
from billing_core.cache.shared_generations import SharedGenerations
from billing_core.config import Settings
from billing_core.db.engine import Database, create_engine
from billing_core.directory.bans import Bans
from billing_core.directory.profiles import Profiles
from billing_core.ledger.call_ledger import CallLedger, SqlCallLedger
from billing_core.rating.engine import RatingEngine
from billing_core.readiness import Readiness


@dataclass
class Services:
    settings: Settings
    db: Database
    cache: ReadThroughCache
    box: SecretBox
    profiles: Profiles
    bans: Bans
    rating: RatingEngine
    call_ledger: CallLedger
    ami: AmiService  # started by `serve` only (callgate.startup)
    readiness: Readiness = field(default_factory=Readiness)
    # front-door sessions (VCS SID, BILLmanager auth=): beside the cache (billing_core.cache.sessions)
    sessions: SessionStore = field(default_factory=MemorySessions)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        engine = create_engine(settings.database_url, busy_timeout_ms=int(settings.db_timeout_s * 1000))
        db = Database(engine, timeout_s=settings.db_timeout_s)
        cache = ReadThroughCache(create_backend(settings.redis_url, SharedGenerations(db)))
        profiles = Profiles(db, cache)
        box = SecretBox.from_file(settings.secret_file)
        return cls(
            settings=settings,
            db=db,
            cache=cache,
            box=box,
            profiles=profiles,
            bans=Bans(db, cache, settings, profiles),
            rating=RatingEngine(db, cache),
            call_ledger=_call_ledger(settings, db),
            ami=AmiService(db, box, _ami_timings(settings), refresh_s=settings.ami_refresh_s),
            sessions=create_sessions(cache.backend),
        )

    async def close(self) -> None:
        await self.ami.close()
        await self.call_ledger.close()
        await self.cache.backend.close()
        await self.db.dispose()


def _call_ledger(settings: Settings, db: Database) -> CallLedger:
    """PostgreSQL: one PL/pgSQL call per decision over asyncpg; other stores: SQLAlchemy."""
    if db.engine.dialect.name == "postgresql":
        from billing_core.ledger.pg_call_ledger import PgCallLedger

        return PgCallLedger(settings.database_url, timeout_s=settings.db_timeout_s)
    return SqlCallLedger(db)


def _ami_timings(settings: Settings) -> AmiTimings:
    return AmiTimings(
        action_timeout_s=settings.ami_action_timeout_s,
        ping_interval_s=settings.ami_ping_interval_s,
        ping_timeout_s=settings.ami_ping_timeout_s,
        reconnect_max_s=settings.ami_reconnect_max_s,
    )
