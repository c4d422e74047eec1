"""`callgate demo`: provision a small operator through the registry itself.

Everything but the directions (the spec has no method that creates them) goes through
the same Narayana methods a portal would call, with an administrator key, so the demo
is also a walkthrough of the provisioning API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.auth.secrets_store import md5_hex
from billing_core.cache.keys import NAMESPACES, NS_RATING
from billing_core.container import Services
from billing_core.directory.keys import add_key
from billing_core.rating.direction_import import import_directions, read_directions_csv

DEMO_CSV = Path(__file__).resolve().parent.parent / "billing_core" / "demo" / "directions.csv"
LOCAL = "127.0.0.1"


class DemoError(RuntimeError):
    pass


@dataclass
class DemoApi:
    dispatcher: Dispatcher
    key: str

    async def call(self, method: str, **args: Any) -> Any:
        raw = {"login": "admin", **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in args.items()}}
        outcome = await self.dispatcher.call(method, raw, Credentials(peer_ip=LOCAL, transport="demo", apikey=self.key))
        if outcome.error is not None:
            raise DemoError(f"{method}: {outcome.error.code.value} {outcome.error.detail}")
        return outcome.value


# (direction code, cost per minute via carrier-a, cost via carrier-b) in EUR
DEMO_PRICES = (
    ("49", "0.0200", "0.0250"),
    ("4915", "0.1000", "0.1200"),
    ("4917", "0.1100", "0.1300"),
    ("44", "0.0300", "0.0350"),
    ("447", "0.0900", "0.1000"),
    ("7", "0.0500", "0.0600"),
    ("79", "0.0800", "0.0900"),
    ("1", "0.0100", "0.0150"),
    ("33", "0.0250", "0.0300"),
)

DEMO_USERS = (
    # username, manager, level, extension, balance EUR, PIN
    ("alice", "admin", 11, "10001", "5.00", "1234"),
    ("bob", "admin", 11, "10002", "0.50", "4321"),
    ("acme", "admin", 22, "20000", "20.00", "5555"),
)


async def _provision(api: DemoApi, services: Services) -> None:
    await import_directions(services.db, read_directions_csv(str(DEMO_CSV)))
    await services.cache.invalidate(NS_RATING)
    await api.call("addBillType", bill_type="sixsec", free_threshold=3, step=6)
    await api.call("addRoute", route="carrier-a", type="sip", sip_server="sip.carrier-a.example", prefix="8")
    await api.call("addRoute", route="carrier-b", type="sip", sip_server="sip.carrier-b.example", prefix="9")
    routes = {r["route"]: r["id"] for r in await api.call("getRoutes", all=True)}
    await api.call("addRates", table="standard", name="Standard", bill_type="sixsec", connect_fee="0.0100")
    tariff = next(t for t in await api.call("getRatesList", all=True) if t["name"] == "Standard")
    directions = {str(d["code"]): d["id"] for d in await api.call("getDirections")}
    for code, cost_a, cost_b in DEMO_PRICES:
        if code not in directions:
            continue
        await api.call(
            "addDirection", rates=tariff["id"], direction=directions[code], cost=cost_a, route=routes["carrier-a"]
        )
        await api.call(
            "addDirection",
            rates=tariff["id"],
            direction=directions[code],
            cost=cost_b,
            route=routes["carrier-b"],
            priority=2,
        )
    for username, _manager, level, extension, balance, pin in DEMO_USERS:
        await api.call(
            "registerUser",
            user=username,
            web_password=md5_hex(f"{username}-demo"),
            accesslevel=level,
            sip_server="127.0.0.1",
            sip_extension=extension,
            sip_password=f"{username}-sip-demo",
            balance=balance,
        )
        await api.call(
            "updateExtension", sip_extension=extension, sip_rates_id=tariff["id"], disa_pin=pin, username=username
        )
    await api.call("addDID", did="4930123456", owner="alice", comment="demo DID")
    await api.call(
        "addDIDRule",
        did="4930123456",
        source="number",
        pattern="%",
        policy="ACCEPT",
        action="call",
        destination="10001",
        callerid="TRANSIT",
        timeout=30,
        username="alice",
    )


async def load_demo(services: Services, *, quiet: bool = False) -> int:
    import billing_core.api.methods  # noqa: F401 - registers every method

    admin_key = await add_key(
        services.db, services.box, name="demo-portal", access_level=95, source="127.0.0.1", owner="admin"
    )
    agi_key = await add_key(
        services.db, services.box, name="demo-asterisk", access_level=50, source="127.0.0.1", owner="admin",
        auth_by="sip_extension",
    )
    await services.cache.invalidate(*NAMESPACES)
    api = DemoApi(Dispatcher(services), admin_key)
    already = services.profiles
    if await already.user_by(None, "username", "alice") is None:
        await _provision(api, services)
        loaded = "demo data loaded"
    else:
        loaded = "demo data was already there; new keys issued"
    settings = services.settings
    if quiet:
        print(f"portal key: {admin_key}")
        print(f"asterisk key: {agi_key}")
        return 0
    http = f"http://{settings.http_host}:{settings.http_port}/billing/api/2.2"
    agi = f"agi://{settings.agi_host}:{settings.agi_port}"
    print(
        f"""{loaded}.

Keys (shown once; stored hashed):
  portal key   (level 95, from 127.0.0.1, acts as login=admin): {admin_key}
  asterisk key (level 50, from 127.0.0.1, users by SIP extension): {agi_key}

Users: alice (ext 10001, 5.00 EUR, PIN 1234), bob (ext 10002, 0.50 EUR), acme (reseller, ext 20000).
Tariff "Standard": bill type sixsec (free 3 s, step 6 s), 0.01 EUR per-call connect_fee,
  carrier-a first, carrier-b as failover (prior=2). DID 4930123456 -> alice's 10001.

Dialplan (see dialplan/extensions.conf):
  same => n,AGI({agi}/callPrepare?login=${{CHANNEL(endpoint)}}&destination=${{EXTEN}}&prior=1)

Try it:
  curl '{http}/{admin_key}/getInfo?login=admin&username=alice'
  curl '{http}/{admin_key}/resolveDirection?number=4915112345678'
  curl '{http}/{admin_key}/getCurrentRates?login=admin&username=alice'

Then: callgate serve"""
    )
    return 0
