"""Rating's part of the process context: the rating engine (cached decks and tariffs)."""

from __future__ import annotations

from typing import Protocol

from billing_core.directory.context import DirectoryContext
from billing_core.rating.engine import RatingEngine


class RatingContext(DirectoryContext, Protocol):
    rating: RatingEngine
