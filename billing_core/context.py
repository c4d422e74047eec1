"""What every subsystem may ask of the running process: settings, the store, the cache,
the secret box, readiness. A Protocol, so that subsystems depend on this shape and not on
billing_core.container, which builds the one object that has it (and imports them all).

Each subsystem adds what it owns: billing_core.directory.context (profiles, bans),
billing_core.rating.context (the rating engine), billing_core.ledger.context (the call
ledger). A module takes the narrowest context that has what it uses.
"""

from __future__ import annotations

from typing import Protocol

from billing_core.auth.secrets_store import SecretBox
from billing_core.cache.readthrough import ReadThroughCache
from billing_core.config import Settings
from billing_core.db.engine import Database
from billing_core.readiness import Readiness


class Context(Protocol):
    settings: Settings
    db: Database
    cache: ReadThroughCache
    box: SecretBox
    readiness: Readiness
