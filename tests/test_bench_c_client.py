"""The benchmark's C load client (bench/agi_load.c), compiled with `cc` and run by bench/load.py
exactly as a bench run does (Bench.run with client "c"), against a real callgate served in this
process (FastAGI + the HTTP shim over the real registry) on each test backend. What it counts
must be what the database holds: a CDR per pair, each balance down by its CDRs' cost, no hold
left open. And Asterisk's side of the wire must decode what callgate sends as the Python port
of Asterisk's parsers does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.load import HOST, Bench, RunStats, Server, _reply_to, compile_c_client
from bench.world import DIRECTIONS, BenchWorld, Direction
from billing_core.api.dispatch import Dispatcher
from billing_core.container import Services
from billing_core.http import bound_port, start_http
from billing_core.ledger.tables import accounts, cdrs, reservations
from billing_core.spool import Spool
from fastagi.bridge import AGIBridge
from fastagi.server import FastAGIServer, ServerConfig
from fastagi.wire import encode_answer
from tests.factories import make_key, make_user
from tests.rating_world import RatingWorld

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")

CHANNELS = 4
SECONDS = 2.0
BALANCE = Decimal("1000000")


@pytest.fixture(scope="module")
def c_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c_client(tmp_path_factory.mktemp("c-client"))


# --- Asterisk's side of the wire, without a server ------------------------------------------------


def _replay(binary: Path, lines: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [str(binary), "--mode", "replay"], input="".join(f"{line}\n" for line in lines).encode(),
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_replies_and_variables_match_the_python_port_of_asterisk(c_client: Path) -> None:
    values = {
        "PLAIN": "Allowed 2994 79010000001",
        "MSET_SPECIALS": r"a,b (c) [d] back\slash =eq",
        "NESTED": "((x,y)) [[z,w]]",
        "SPACES": "  two  spaces ",
        "QUOTE": 'say "hi"',  # no MSet for this one: a SET VARIABLE line
        "EMPTY": "",
        "CALLGATE_RESULT": "Allowed",
    }
    lines = [
        *encode_answer(values).lines,
        'SET VARIABLE LONE "x y"', "SET VARIABLE BROKEN", 'VERBOSE "note" 1', "NOOP", "GET VARIABLE X",
        "exec mset low=1,esc=\\,2", 'EXEC MSet "noequals,k=v=w,(p=q),[r=s]"',
    ]  # fmt: skip
    expected: dict[str, str] = {}
    replies = [_reply_to(line, expected).decode().rstrip("\n") for line in lines]
    report = _replay(c_client, lines)
    assert report["replies"] == replies
    assert report["variables"] == expected
    assert {k: expected[k] for k in values} == values  # what callgate meant is what Asterisk stores


# --- a bench run against callgate in this process ---------------------------------------------------


@dataclass
class Served:
    bench: Bench
    services: Services
    logins: tuple[str, ...]


@pytest.fixture
def idle_process() -> Iterator[subprocess.Popen[bytes]]:
    """Stands in for the `callgate serve` process in the CPU accounting (callgate runs in
    this test's process here)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()  # our own child, by its handle
        proc.wait()


async def _bench_world(services: Services) -> BenchWorld:
    """bench/world.py's shape, small: a few directions, byminute tariff, users with extensions."""
    w = RatingWorld(services)
    route = await w.route("bench-primary", prefix="p/")
    tariff = await w.tariff("bench")
    made: list[Direction] = []
    for code, name, min_len, max_len, price, _failover in DIRECTIONS[:4]:
        direction = await w.direction(code, name, min_len=min_len, max_len=max_len)
        await w.entry(tariff, direction, price, route)
        made.append(Direction(code, min_len, max_len))
    logins = tuple(str(70001 + n) for n in range(CHANNELS))
    for n, login in enumerate(logins):
        await make_user(services, f"bench{n:05d}", balance=BALANCE, sip_extension=login, rates_id=tariff)
    # FastAGI takes the first server key (by id) that admits the peer: the Asterisk key first.
    asterisk_key = await make_key(services, level=50, auth_by="sip_extension", name="bench-asterisk")
    http_key = await make_key(services, level=95, auth_by="sip_extension", name="bench-http")
    return BenchWorld(asterisk_key, http_key, logins, tuple(made), tariff)


@pytest.fixture
async def served(
    services: Services, tmp_path: Path, c_client: Path, idle_process: subprocess.Popen[bytes]
) -> AsyncIterator[Served]:
    import billing_core.api.methods  # noqa: F401 - registers every method

    world = await _bench_world(services)
    dispatcher = Dispatcher(services)
    bridge = AGIBridge(dispatcher, Spool(tmp_path / "spool"))
    agi = FastAGIServer(bridge, ServerConfig(dispatch_timeout_s=bridge.timeout_s * 2))
    await agi.start(HOST, 0)
    http = await start_http(dispatcher, HOST, 0)
    try:
        server = Server(idle_process, agi.port, bound_port(http), tmp_path / "serve.log")
        bench = Bench(world, server, services.settings.database_url, "lean", 1, "none", c_client=c_client)
        yield Served(bench, services, world.extensions)
    finally:
        agi.close()
        await agi.wait_closed()
        await http.cleanup()


def _check_run(stats: RunStats, mode: str) -> None:
    assert stats.client == "c" and stats.mode == mode
    assert stats.pairs > 0, stats
    assert not stats.errors, stats.errors
    assert len(stats.prepare_ms) == len(stats.finish_ms) == stats.pairs  # no errors: one of each per pair
    assert all(ms > 0 for ms in stats.prepare_ms + stats.finish_ms)
    assert SECONDS <= stats.seconds < SECONDS + 5
    assert stats.late == 0
    # the C client's CPU is the client's, not the AGI scripts'; "other" is the rest of the machine
    assert stats.cpu_s["client"] > 0 and stats.cpu_s["scripts"] == pytest.approx(0.0, abs=0.02)
    assert {"client", "scripts", "callgate", "other"} <= set(stats.cpu_s)


async def test_c_client_pairs_are_the_cdrs_and_the_balances(served: Served) -> None:
    bench = served.bench
    first = bench.ids.next
    fastagi = await bench.run("fastagi", CHANNELS, SECONDS, 1, client="c")
    _check_run(fastagi, "fastagi")
    assert bench.ids.next == first + fastagi.pairs  # uniqueids continue where the C client stopped
    http = await bench.run("http", CHANNELS, SECONDS, 1, client="c")
    _check_run(http, "http")
    assert bench.ids.next == first + fastagi.pairs + http.pairs
    pairs = fastagi.pairs + http.pairs

    async with served.services.db.begin() as conn:
        count, uids = (
            await conn.execute(select(func.count(), func.count(cdrs.c.call_uid.distinct())).select_from(cdrs))
        ).one()
        spent = dict((await conn.execute(select(cdrs.c.account_id, func.sum(cdrs.c.cost)).group_by(
            cdrs.c.account_id))).all())  # fmt: skip
        balances = dict((await conn.execute(select(accounts.c.id, accounts.c.balance))).all())
        open_holds = (
            await conn.execute(select(func.count()).select_from(reservations).where(reservations.c.state == "open"))
        ).scalar_one()
    assert count == uids == pairs
    assert open_holds == 0
    assert len(spent) == CHANNELS  # every channel's user made calls
    for account, cost in spent.items():
        assert Decimal(balances[account]) == BALANCE - Decimal(cost)


async def test_c_client_paces_the_offered_rate(served: Served) -> None:
    rate, seconds = 10.0, 1.0  # pairs/s over the channels: each channel one pair every 0.4 s
    stats = await served.bench.run("fastagi", CHANNELS, seconds, 1, rate, client="c")
    assert not stats.errors and stats.late == 0
    assert rate * seconds - CHANNELS <= stats.pairs <= rate * seconds + CHANNELS
