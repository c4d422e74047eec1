"""Bans by Asterisk server (spec "Data security"): getBans, banIP, unbanIP,
updateBanPermanent, flushBans, flushAllBans, and `callgate firewall export`.

The world: two Asterisk servers, pbx1 (sip_server pbx1.example.net) and pbx2; reseller
corp1 (22) whose user u1 has a SIP account on pbx1; reseller corp2 (22) with u2 on pbx2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.asterisk.bans import nft_script
from billing_core.asterisk.servers import ServerSpec, add_server
from billing_core.container import Services
from billing_core.directory.tables import bans, sip_extensions
from billing_core.errors import ErrorCode
from tests.factories import make_key, make_user
from tests.http_support import serve


@dataclass
class World:
    services: Services
    dispatcher: Dispatcher
    key: str

    async def call(self, method: str, login: str, **args: Any) -> Outcome:
        raw = {name: str(value) for name, value in args.items()} | {"login": login}
        cred = Credentials(peer_ip="127.0.0.1", transport="test", apikey=self.key)
        return await self.dispatcher.call(method, raw, cred)

    async def ok(self, method: str, login: str = "admin", **args: Any) -> Any:
        outcome = await self.call(method, login, **args)
        assert outcome.ok, (method, args, outcome.error)
        return outcome.value

    async def fails(self, code: ErrorCode, method: str, login: str = "admin", **args: Any) -> None:
        outcome = await self.call(method, login, **args)
        assert outcome.error is not None and outcome.error.code is code, (method, args, outcome)


async def _world(services: Services) -> World:
    import billing_core.api.methods  # noqa: F401 - registers every method

    for name in ("pbx1", "pbx2"):
        spec = ServerSpec(name, f"10.0.0.{name[-1]}", f"10.0.0.{name[-1]}", 5038, "", None, (f"{name}.example.net",))
        await add_server(services.db, services.box, spec)
    await make_user(services, "corp1", accesslevel=22)
    await make_user(services, "corp2", accesslevel=22)
    u1 = await make_user(services, "u1", manager="corp1", sip_extension="20001")
    u2 = await make_user(services, "u2", manager="corp2", sip_extension="20002")
    async with services.db.begin() as conn:
        for made, server in ((u1, "PBX1.example.net"), (u2, "pbx2.example.net")):  # names match case-blind
            await conn.execute(update(sip_extensions).where(sip_extensions.c.user_id == made.id)
                               .values(sip_server=server))  # fmt: skip
    key = await make_key(services, level=44, owner="admin")
    return World(services, Dispatcher(services), key)


async def test_ban_list_and_unban_as_the_spec_shows(services: Services) -> None:
    w = await _world(services)
    assert await w.ok("banIP", source="pbx1", target="192.0.2.7", reason="SIP scan") is True
    [ban] = await w.ok("getBans")
    assert set(ban) == {"id", "source", "target", "reason", "date", "clientdate", "permanent"}
    assert (ban["source"], ban["target"], ban["reason"], ban["permanent"]) == ("pbx1", "192.0.2.7", "SIP scan", False)
    assert datetime.strptime(ban["date"], "%Y-%m-%d %H:%M:%S")  # the wire's date form
    assert await w.ok("updateBanPermanent", id=ban["id"], state="true") is True
    assert (await w.ok("getBans"))[0]["permanent"] is True
    assert await w.ok("updateBanPermanent", id=ban["id"], state="false") is True
    assert (await w.ok("getBans"))[0]["permanent"] is False
    assert await w.ok("unbanIP", id=ban["id"]) is True
    assert await w.ok("getBans") == []
    await w.fails(ErrorCode.E_NOT_EXIST, "unbanIP", id=ban["id"])
    await w.fails(ErrorCode.E_NOT_EXIST, "updateBanPermanent", id=ban["id"], state="true")


async def test_the_source_is_a_server_by_name_address_or_sip_server(services: Services) -> None:
    w = await _world(services)
    await w.ok("banIP", source="10.0.0.2", target="192.0.2.1")
    await w.ok("banIP", source="pbx1.example.net", target="192.0.2.2")
    assert sorted((b["source"], b["target"]) for b in await w.ok("getBans")) == [
        ("pbx1", "192.0.2.2"), ("pbx2", "192.0.2.1"),
    ]  # fmt: skip
    await w.fails(ErrorCode.E_SIP_SERVER_NOT_EXIST, "banIP", source="nowhere", target="192.0.2.3")
    await w.fails(ErrorCode.E_INVALID_ARGUMENT, "banIP", source="pbx1", target="not-an-ip")
    await w.fails(ErrorCode.E_MISSING_ARGUMENT, "banIP", source="pbx1")


async def test_a_whitelisted_target_cannot_be_banned_and_is_never_refused(services: Services) -> None:
    w = await _world(services)
    await w.ok("banIP", source="pbx1", target="192.0.2.8")
    assert await services.bans.is_banned(None, "192.0.2.8")
    assert await w.ok("banIP", source="whitelist", target="192.0.2.0/24", reason="office") is True
    assert not await services.bans.is_banned(None, "192.0.2.8")  # a ban from before no longer applies
    await w.ok("unbanIP", id=(await w.ok("getBans"))[0]["id"])
    await w.fails(ErrorCode.E_TARGET_WHITELISTED, "banIP", source="pbx1", target="192.0.2.9")
    assert not await services.bans.is_banned(None, "192.0.2.9")
    [entry] = await w.ok("getBans")
    assert (entry["source"], entry["target"], entry["permanent"]) == ("whitelist", "192.0.2.0/24", True)


async def test_a_banned_address_is_refused_at_the_http_door(services: Services) -> None:
    w = await _world(services)
    await w.ok("banIP", source="pbx1", target="127.0.0.3")
    async with serve(services, test_methods=False) as api:
        reply = await api.get(w.key, "getBans", {"login": "admin"}, source="127.0.0.3")
        assert reply.status == 403, reply.text
        assert (await api.get(w.key, "getBans", {"login": "admin"})).status == 200


async def test_resellers_see_and_flush_only_their_servers_bans(services: Services) -> None:
    w = await _world(services)
    await w.ok("banIP", source="pbx1", target="192.0.2.1")
    await w.ok("banIP", source="pbx2", target="192.0.2.2")
    await w.ok("banIP", source="whitelist", target="198.51.100.1")
    assert sorted(b["target"] for b in await w.ok("getBans", "corp1")) == ["192.0.2.1", "198.51.100.1"]
    assert sorted(b["target"] for b in await w.ok("getBans", "corp2")) == ["192.0.2.2", "198.51.100.1"]
    assert await w.ok("flushBans", "corp1") is True
    assert sorted(b["target"] for b in await w.ok("getBans")) == ["192.0.2.2", "198.51.100.1"]
    # level 33: resellers may not ban, unban or flush everything
    for method, args in (("banIP", {"source": "pbx2", "target": "192.0.2.5"}), ("unbanIP", {"id": 1}),
                         ("updateBanPermanent", {"id": 1, "state": "true"}), ("flushAllBans", {})):  # fmt: skip
        await w.fails(ErrorCode.E_INSUFFICIENT_ACCESS, method, "corp2", **args)
    assert await w.ok("flushAllBans") is True
    assert [b["target"] for b in await w.ok("getBans")] == ["198.51.100.1"]  # the whitelist stays


async def test_the_spec_example_over_http(services: Services) -> None:
    w = await _world(services)
    async with serve(services, test_methods=False) as api:
        url = api.url(w.key, "banIP", query="source=whitelist&target=127.0.0.1&reason=ya+je+localhost&login=admin")
        reply = await api.request("GET", url)
        assert (reply.status, reply.json()) == (200, {"result": True, "response": True, "description": ""})
    async with services.db.begin() as conn:
        row = (await conn.execute(select(bans.c.source, bans.c.ip, bans.c.reason))).one()
    assert tuple(row) == ("whitelist", "127.0.0.1", "ya je localhost")


def test_the_firewall_script_holds_one_servers_bans() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    later = (now + timedelta(seconds=600)).isoformat()
    rows: list[dict[str, Any]] = [
        {"source": "pbx1", "ip": "192.0.2.1", "expires_at": later},
        {"source": "pbx1", "ip": "2001:db8::1", "expires_at": None},
        {"source": "pbx2", "ip": "192.0.2.2", "expires_at": None},  # another server's
        {"source": "pbx1", "ip": "192.0.2.3", "expires_at": (now - timedelta(seconds=1)).isoformat()},  # over
        {"source": "auto", "ip": "203.0.113.9", "expires_at": None},  # callgate's own lock-out
        {"source": "whitelist", "ip": "198.51.100.0/24", "expires_at": None},
    ]
    script = nft_script("pbx1", rows, now)
    sets = _nft_sets(script)
    assert sets == {
        "whitelist_v4": ["198.51.100.0/24"],
        "banned_v4": ["192.0.2.1 timeout 600s", "203.0.113.9"],
        "whitelist_v6": [],
        "banned_v6": ["2001:db8::1"],
    }
    assert script.startswith("#!/usr/sbin/nft -f\n")
    assert "ip saddr @whitelist_v4 accept" in script.split("ip saddr @banned_v4 drop")[0]  # accept before drop
    assert script.count("{") == script.count("}")


def _nft_sets(script: str) -> dict[str, list[str]]:
    """set name -> its elements, read the way nft reads `set NAME { …; elements = { a, b } }`."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in script.splitlines():
        words = line.split()
        if words[:1] == ["set"]:
            current = words[1]
            found[current] = []
        elif current and line.strip().startswith("elements = {"):
            inner = line.split("{", 1)[1].rsplit("}", 1)[0]
            found[current] = [e.strip() for e in inner.split(",")]
        elif line.strip() == "}":
            current = ""
    return found


async def test_callgate_firewall_export(services: Services, capsys: Any) -> None:
    from callgate.asterisk_cli import firewall_export

    w = await _world(services)
    await w.ok("banIP", source="pbx2", target="192.0.2.2")

    class Args:
        server = "pbx2"

    assert await firewall_export(services, Args()) == 0  # type: ignore[arg-type]
    assert _nft_sets(capsys.readouterr().out)["banned_v4"][0].startswith("192.0.2.2")
    Args.server = "pbx9"
    assert await firewall_export(services, Args()) == 2  # type: ignore[arg-type]
    assert "no Asterisk server" in capsys.readouterr().err
    assert json.dumps(await services.bans.list())  # the CLI's `bans list` rows stay JSON
