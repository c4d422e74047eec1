"""A served callgate (the real registry) with the VCS and BILLmanager doors open.

The world: two resellers `corp1` and `corp2` (22) under the master administrator,
`u1` (11) under corp1 and `u2` (11) under corp2, every password "secret"; one client key
(level 0, no default user, 127.0.0.1 only) that both doors act through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from billing_core.container import Services
from tests.factories import make_key, make_user
from tests.http_support import HOST, Api, serve, with_settings

PASSWORD = "secret"


@dataclass
class Doors:
    api: Api
    services: Services
    key: str

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.api.port}"

    @property
    def jsonrpc(self) -> str:
        return f"{self.base}/jsonrpc/"

    @property
    def billmgr(self) -> str:
        return f"{self.base}/billmgr"


async def make_world(services: Services) -> str:
    await make_user(services, "corp1", accesslevel=22, manager="admin")
    await make_user(services, "corp2", accesslevel=22, manager="admin")
    await make_user(services, "u1", accesslevel=11, manager="corp1")
    await make_user(services, "u2", accesslevel=11, manager="corp2")
    return await make_key(services, level=0, owner="admin", name="doors")


@asynccontextmanager
async def open_doors(services: Services, **settings: Any) -> AsyncIterator[Doors]:
    key = await make_world(services)
    served = with_settings(services, vcs_apikey=key, billmgr_apikey=key, **settings)
    async with serve(served, test_methods=False) as api:
        yield Doors(api, served, key)
