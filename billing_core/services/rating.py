"""Rating engine (placeholder until the rating work lands)."""

from __future__ import annotations

from billing_core.cache.readthrough import ReadThroughCache
from billing_core.db.engine import Database


class RatingEngine:
    def __init__(self, db: Database, cache: ReadThroughCache) -> None:
        self.db = db
        self.cache = cache
