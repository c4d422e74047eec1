"""Aliases applied to calls, on both backends: a dialled alias of the caller's extension, of
its user or a global one is rated and dialled as its destination (over FastAGI with the
Asterisk-behaving client, over HTTP, and through the whole dialplan); callFinish charges
the destination callPrepare held, whatever happens to the alias meanwhile; every alias
write reaches the next decision (cache invalidation); loops are refused at call time too.
Assertions on channel variables, answer lines, CDR rows, holds and balances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.auth.secrets_store import md5_hex
from billing_core.cache.keys import NS_ALIASES
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.ledger.tables import cdrs, reservations
from billing_core.numbers import aliases
from billing_core.numbers.tables import aliases as alias_rows
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import AGISessionResult, run_agi_session
from tests.dialplan_parse import parse
from tests.dialplan_sim import Caller, DialOutcome, DialplanSim
from tests.factories import balance_of, make_key, make_user
from tests.http_support import serve
from tests.rating_world import RatingWorld

DIALPLAN = Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf"
TELE2 = "79010000001"  # 0.60 EUR/min via route1-cli (prefix outline/), six-second steps
MEGAFON = "79200000002"  # 1.20 EUR/min via route2 (prefix backup/)
LOOP = "E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING"


@dataclass
class Gate:
    services: Services
    dispatcher: Dispatcher
    port: int
    portal_key: str
    account: int

    async def agi(self, script: str, query: str, uniqueid: str) -> AGISessionResult:
        return await run_agi_session("127.0.0.1", self.port, script, query=query, uniqueid=uniqueid)

    async def api(self, login: str, method: str, **args: str) -> Any:
        """A portal request through the dispatcher (so its cache invalidation runs)."""
        raw = {"login": login, "password": md5_hex(f"{login}-pw"), **args}
        cred = Credentials(peer_ip="127.0.0.1", transport="test", apikey=self.portal_key)
        outcome = await self.dispatcher.call(method, raw, cred)
        assert outcome.error is None, outcome.error
        return outcome.value


@pytest.fixture
async def gate(services: Services, tmp_path: Path) -> AsyncIterator[Gate]:
    """alice (SIP 10000 and 10003; 10 EUR, calls of 2 minutes at most) and carol (SIP 30000)
    on `std`: Tele2 at 0.60, Megafon at 1.20 EUR/min, six-second steps; bob (SIP 10001) is
    local; boss is an administrator."""
    import billing_core.api.methods  # noqa: F401

    w = RatingWorld(services)
    tele2 = await w.direction("7901", "Russia Mobile Tele2", min_len=11, max_len=11)
    megafon = await w.direction("7920", "Russia Mobile Megafon", min_len=11, max_len=11)
    route1 = await w.route("route1-cli", prefix="outline/")
    route2 = await w.route("route2", prefix="backup/")
    sixsec = await w.bill_type("sixsec", free_threshold=0, step=6)
    std = await w.tariff("std", bill_type=sixsec)
    await w.entry(std, tele2, "0.60", route1)
    await w.entry(std, megafon, "1.20", route2)
    alice = await make_user(services, "alice", balance=Decimal("10"), sip_extension="10000", sip_rates_id=std,
                            password="alice-pw", sip_callerid="79990000000", allowed_call_len=120)  # fmt: skip
    await _second_extension(services, alice.id, "10003", std)
    await make_user(services, "bob", sip_extension="10001", sip_rates_id=std)
    await make_user(services, "carol", sip_extension="30000", sip_rates_id=std)
    await make_user(services, "boss", accesslevel=33, password="boss-pw")
    await make_key(services, level=50, auth_by="sip_extension", name="asterisk")
    portal = await make_key(services, level=0, name="portal")
    dispatcher = Dispatcher(services)
    server = FastAGIServer(AGIBridge(dispatcher, Spool(tmp_path / "spool")), ServerConfig(env_timeout_s=2.0))
    await server.start("127.0.0.1", 0)
    try:
        yield Gate(services, dispatcher, server.port, portal, alice.account_id)
    finally:
        server.close()
        await server.wait_closed()


async def _second_extension(services: Services, user_id: int, name: str, tariff: int) -> None:
    from billing_core.directory.tables import sip_extensions

    async with services.db.begin() as conn:
        await conn.execute(
            sip_extensions.insert().values(
                sip_extension=name, user_id=user_id, sip_password_enc=services.box.encrypt("x"), sip_rates_id=tariff,
                created_at=utcnow(),
            )
        )  # fmt: skip
    await services.cache.invalidate("profiles")


def prepare_query(login: str, destination: str, prior: int = 1) -> str:
    return f"login={login}&destination={destination}&callerid=&prior={prior}"


def finish_query(login: str, destination: str, seconds: int) -> str:
    return (f"login={login}&destination={destination}&callerid=&prior=1&length={seconds}"
            f"&answered_ms={seconds * 1000}&status=ANSWER&cause=16")  # fmt: skip


async def cdr_rows(services: Services, uid: str) -> list[tuple[str, str, str, int, Decimal]]:
    async with services.db.begin() as conn:
        found = (await conn.execute(select(cdrs).where(cdrs.c.call_uid == uid))).all()
    return [(r.destination, r.direction, r.route, r.billed_s, Decimal(r.cost)) for r in found]


async def open_holds(services: Services) -> int:
    async with services.db.begin() as conn:
        return len((await conn.execute(select(reservations))).all())


# ------------------------------------------------------------------------- FastAGI


async def test_a_dialled_alias_is_rated_and_dialled_as_its_destination(gate: Gate) -> None:
    before = await gate.agi("callPrepare", prepare_query("10000", "111"), "a0")
    assert (before.variables["CALLGATE_RESULT"], before.variables["CALLGATE_ERROR"]) == ("Declined", "E_UNROUTABLE")
    assert await gate.api("alice", "addAlias", alias="111", destination=TELE2) is True  # the cache hears of it

    prepared = (await gate.agi("callPrepare", prepare_query("10000", "111"), "a1")).variables
    assert prepared["CALLGATE_RESULT"] == "Allowed"
    assert prepared["CALLGATE_DESTINATION"] == TELE2
    assert (prepared["CALLGATE_DIRECTION"], prepared["CALLGATE_ROUTE"]) == ("Russia Mobile Tele2", "route1-cli")
    assert prepared["CALLGATE_ANSWER"] == f"Allowed 120 {TELE2} 79990000000 RussiaMobileTele2 outline/ route1-cli -1 -1"

    # The dialplan's callFinish names the number as dialled (EXTEN): 111.
    finished = (await gate.agi("callFinish", finish_query("10000", "111", 61), "a1")).variables
    assert finished["CALLGATE_RESULT"] == "Saved"
    line = f"Saved RussiaMobileTele2 [79990000000/{TELE2}] via [route1-cli] 66 0.66 EUR ANSWER"
    assert finished["CALLGATE_ANSWER"] == line
    assert await cdr_rows(gate.services, "a1") == [(TELE2, "Russia Mobile Tele2", "route1-cli", 66, Decimal("0.66"))]
    assert await balance_of(gate.services, gate.account) == Decimal("9.34")
    assert await open_holds(gate.services) == 0
    again = (await gate.agi("callFinish", finish_query("10000", "111", 61), "a1")).variables
    assert again["CALLGATE_ANSWER"] == finished["CALLGATE_ANSWER"]
    assert await balance_of(gate.services, gate.account) == Decimal("9.34")


async def test_callfinish_charges_the_destination_callprepare_held(gate: Gate) -> None:
    """The alias is pointed at a dearer number, then deleted, while its calls are up: each
    call is charged as prepared (Tele2, 0.60/min), not as the alias stands at its end."""
    await gate.api("alice", "addAlias", alias="111", destination=TELE2)
    [mine] = await gate.api("alice", "getAliases")
    for uid in ("m1", "m2"):
        assert (await gate.agi("callPrepare", prepare_query("10000", "111"), uid)).variables["CALLGATE_ROUTE"] == (
            "route1-cli"
        )
    await gate.api("alice", "updateAlias", id=str(mine["id"]), destination=MEGAFON)
    assert (await gate.agi("callPrepare", prepare_query("10000", "111"), "m3")).variables["CALLGATE_DESTINATION"] == (
        MEGAFON  # a new call takes the new destination at once
    )
    saved = (await gate.agi("callFinish", finish_query("10000", "111", 60), "m1")).variables
    assert saved["CALLGATE_COST"] == "0.60" and TELE2 in saved["CALLGATE_ANSWER"]
    await gate.api("alice", "deleteAlias", id=str(mine["id"]))
    saved = (await gate.agi("callFinish", finish_query("10000", "111", 60), "m2")).variables
    assert saved["CALLGATE_COST"] == "0.60"
    saved = (await gate.agi("callFinish", finish_query("10000", "111", 60), "m3")).variables
    assert saved["CALLGATE_COST"] == "1.20"  # prepared as Megafon
    assert [r[0] for uid in ("m1", "m2", "m3") for r in await cdr_rows(gate.services, uid)] == [TELE2, TELE2, MEGAFON]
    assert await balance_of(gate.services, gate.account) == Decimal("7.60")
    assert await open_holds(gate.services) == 0
    gone = (await gate.agi("callPrepare", prepare_query("10000", "111"), "m4")).variables
    assert gone["CALLGATE_ERROR"] == "E_UNROUTABLE"  # the delete reached the cache too


async def test_the_extensions_alias_then_the_users_then_the_global_one(gate: Gate) -> None:
    await gate.api("boss", "addAlias", alias="111", destination="79010000003", **{"global": "true"})
    await gate.api("alice", "addAlias", alias="111", destination="79010000002")
    await gate.api("alice", "addAlias", alias="111", destination="79010000001", sip_extension="10000")
    seen = {}
    for login, uid in (("10000", "p1"), ("10003", "p2"), ("30000", "p3")):
        prepared = await gate.agi("callPrepare", prepare_query(login, "111"), uid)
        seen[login] = prepared.variables["CALLGATE_DESTINATION"]
    assert seen == {"10000": "79010000001", "10003": "79010000002", "30000": "79010000003"}


async def test_an_alias_chain_and_an_alias_of_a_local_extension(gate: Gate) -> None:
    await gate.api("alice", "addAlias", alias="1", destination="2")
    await gate.api("alice", "addAlias", alias="2", destination=TELE2)
    await gate.api("alice", "addAlias", alias="0", destination="10001")  # bob
    chained = (await gate.agi("callPrepare", prepare_query("10000", "1"), "c1")).variables
    assert (chained["CALLGATE_RESULT"], chained["CALLGATE_DESTINATION"]) == ("Allowed", TELE2)
    internal = (await gate.agi("callPrepare", prepare_query("10000", "0"), "c2")).variables
    assert (internal["CALLGATE_DESTINATION"], internal["CALLGATE_ROUTE"]) == ("10001", "internal")
    saved = (await gate.agi("callFinish", finish_query("10000", "0", 30), "c2")).variables
    assert (saved["CALLGATE_RESULT"], saved["CALLGATE_COST"]) == ("Saved", "0.00")
    assert await cdr_rows(gate.services, "c2") == [("10001", "internal", "internal", 30, Decimal("0"))]


async def _write_loop(services: Services) -> None:
    """111 -> 222 -> 111 for alice, written past the write-time check (as two concurrent
    writes on another store could leave it), and announced as a write would."""
    async with services.db.begin() as conn:
        for name, target in (("111", "222"), ("222", "111")):
            await conn.execute(alias_rows.insert().values(
                alias=name, destination=target, owner="alice", scope="user:alice", created_at=utcnow()))  # fmt: skip
    await services.cache.invalidate(NS_ALIASES)


async def test_a_loop_is_refused_at_call_time(gate: Gate) -> None:
    await _write_loop(gate.services)
    declined = (await gate.agi("callPrepare", prepare_query("10000", "111"), "l1")).variables
    assert (declined["CALLGATE_RESULT"], declined["CALLGATE_ERROR"]) == ("Declined", LOOP)
    assert declined["CALLGATE_ANSWER"] == f"Declined {LOOP}"
    assert await open_holds(gate.services) == 0
    # other callers, and other numbers, are not concerned
    assert (await gate.agi("callPrepare", prepare_query("30000", "111"), "l2")).variables["CALLGATE_ERROR"] == (
        "E_UNROUTABLE"
    )
    assert (await gate.agi("callPrepare", prepare_query("10000", TELE2), "l3")).variables["CALLGATE_RESULT"] == (
        "Allowed"
    )


async def test_a_loop_made_mid_call_still_lets_the_call_be_charged(gate: Gate) -> None:
    await gate.api("alice", "addAlias", alias="111", destination=TELE2)
    assert (await gate.agi("callPrepare", prepare_query("10000", "111"), "k1")).variables["CALLGATE_RESULT"] == (
        "Allowed"
    )
    async with gate.services.db.begin() as conn:
        await conn.execute(alias_rows.delete())
    await _write_loop(gate.services)
    saved = (await gate.agi("callFinish", finish_query("10000", "111", 6), "k1")).variables
    assert (saved["CALLGATE_RESULT"], saved["CALLGATE_COST"]) == ("Saved", "0.06")
    assert await cdr_rows(gate.services, "k1") == [(TELE2, "Russia Mobile Tele2", "route1-cli", 6, Decimal("0.06"))]
    assert await open_holds(gate.services) == 0


# ---------------------------------------------------------------------------- HTTP


async def test_http_pair_without_call_id_finds_its_hold_by_the_alias(gate: Gate) -> None:
    """The spec's HTTP form (no call_id): the finish names 111, the hold was rated as Tele2."""
    await gate.api("alice", "addAlias", alias="111", destination=TELE2)
    http_key = await make_key(gate.services, level=50, auth_by="sip_extension", name="http-asterisk")
    async with serve(gate.services, test_methods=False) as api:
        prepared = await api.get(http_key, "callPrepare", {"login": "10000", "destination": "111"})
        assert prepared.text.startswith(f"Allowed 120 {TELE2} "), prepared.text
        saved = await api.get(http_key, "callFinish", {"login": "10000", "destination": "111", "length": "12",
                                                       "status": "ANSWER"})  # fmt: skip
        assert saved.text == f"Saved RussiaMobileTele2 [79990000000/{TELE2}] via [route1-cli] 12 0.12 EUR ANSWER"
    assert await open_holds(gate.services) == 0
    assert await balance_of(gate.services, gate.account) == Decimal("9.88")


# ------------------------------------------------------------------------ dialplan


async def test_the_dialplan_dials_the_aliases_destination(gate: Gate) -> None:
    await gate.api("alice", "addAlias", alias="111", destination=TELE2)
    caller = Caller(channel="PJSIP/10000-00000001", dials=[DialOutcome("ANSWER", ring_s=1, talk_s=12)])
    sim = DialplanSim(parse(DIALPLAN.read_text()), {"CALLGATE_AGI": f"agi://127.0.0.1:{gate.port}"}, caller,
                      uniqueid="d1")  # fmt: skip
    await sim.call("callgate-outbound", "111")
    assert [r.split("?")[0] for r in sim.run.requests] == ["callPrepare", "callFinish"]
    assert [d[0] for d in sim.run.dials] == [f"PJSIP/outline/{TELE2}@route1-cli"]
    assert await cdr_rows(gate.services, "d1") == [(TELE2, "Russia Mobile Tele2", "route1-cli", 12, Decimal("0.12"))]
    assert await balance_of(gate.services, gate.account) == Decimal("9.88")


# ---------------------------------------------------- the resolution itself, cache down


async def test_resolution_without_the_cache_reads_only_what_it_meets(gate: Gate) -> None:
    await gate.api("alice", "addAlias", alias="1", destination="2")
    await gate.api("alice", "addAlias", alias="2", destination=TELE2, sip_extension="10000")
    await gate.api("boss", "addAlias", alias="3", destination="1", **{"global": "true"})

    async def resolve(extension: str | None, user: str, number: str) -> str:
        return await aliases.resolve(gate.services, None, sip_extension=extension, username=user, number=number)

    assert await resolve("10000", "alice", "3") == TELE2  # global 3 -> alice's 1 -> 10000's 2
    assert await resolve("10003", "alice", "3") == "2"
    assert await resolve("30000", "carol", "3") == "1"
    assert await resolve("30000", "carol", "77") == "77"
    await _write_loop(gate.services)
    with pytest.raises(aliases.AliasLoop):
        await resolve("10003", "alice", "111")
    gens = await gate.services.cache.generations()
    assert gens is not None
    with pytest.raises(aliases.AliasLoop):
        await aliases.resolve(gate.services, gens, sip_extension="10003", username="alice", number="111")


def test_the_index_follows_chains_and_refuses_loops() -> None:
    index = aliases.AliasIndex([
        ["user:u", "1", "2"], ["user:u", "2", "3"], ["user:u", "3", "4"], ["user:u", "4", "5"],
        ["user:u", "5", "6"], ["ext:e", "2", "20"], ["global", "9", "9"], ["global", "7", "8"],
    ])  # fmt: skip
    user, ext = aliases.caller_scopes(None, "u"), aliases.caller_scopes("e", "u")
    assert index.resolve(user, "42") == "42"
    assert index.resolve(user, "2") == "6"  # 2 3 4 5: four aliases
    assert index.resolve(ext, "1") == "20"  # the extension's 2 first
    assert index.resolve(aliases.caller_scopes(None, "v"), "7") == "8"
    with pytest.raises(aliases.AliasLoop) as too_long:
        index.resolve(user, "1")  # 1 2 3 4 5: five
    assert not too_long.value.cycle and too_long.value.chain == ("1", "2", "3", "4", "5", "6")
    with pytest.raises(aliases.AliasLoop) as cycle:
        index.resolve(user, "9")
    assert cycle.value.cycle and cycle.value.chain == ("9", "9")
