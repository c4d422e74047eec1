"""The directory's part of the process context: the cached profiles and the bans."""

from __future__ import annotations

from typing import Protocol

from billing_core.context import Context
from billing_core.directory.bans import Bans
from billing_core.directory.profiles import Profiles


class DirectoryContext(Context, Protocol):
    profiles: Profiles
    bans: Bans
