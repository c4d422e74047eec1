"""`callgate reconcile` on the real Asterisk 22.10.1 CDR rows of transcripts 015-027
(issue 9, item 5), on both backends and from both sources (cdr_csv's Master.csv, and the
table cdr_pgsql / cdr_adaptive_odbc write).

The holds are placed by the transcripts' own callPrepare requests; their callFinish never
arrived (callgate was down), except 025's (prior 1 of the failover, CONGESTION). Prices:
0.60 EUR/min by the second (0.01 EUR/s), no connection fee, so each second is a cent.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select, text, update

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.calls.asterisk_cdr import CSV_COLUMNS, AsteriskCdr, read_cdr_table, read_master_csv
from billing_core.calls.reconcile import OpenHold, Report, assign_dials, decide, names_route, reconcile
from billing_core.clock import utcnow
from billing_core.container import Services
from billing_core.ledger.book import Reservation
from billing_core.ledger.tables import cdrs, reservations
from billing_core.rating.engine import Rating
from callgate.cli import main
from tests.factories import balance_of, make_key, make_user
from tests.rating_world import RatingWorld
from tests.shared_paths import transcripts_dir

START = Decimal("2000.00")


def _transcript(prefix: str) -> dict[str, object]:
    (path,) = transcripts_dir().glob(f"{prefix}-*.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _request(prefix: str) -> tuple[str, dict[str, str], str]:
    """(script, arguments, agi_uniqueid) of a transcript's FastAGI request."""
    exchange = _transcript(prefix)["exchange"]
    env = "".join(e["bytes"] for e in exchange[:2])  # type: ignore[index]
    fields = dict(line.split(": ", 1) for line in env.splitlines() if ": " in line)
    script, _, query = fields["agi_network_script"].partition("?")
    return script, dict(parse_qsl(query, keep_blank_values=True)), fields["agi_uniqueid"]


def master_csv_lines() -> list[str]:
    """Every distinct Master.csv line of 015-027, in the order Asterisk wrote them."""
    lines: list[str] = []
    for number in range(15, 28):
        for line in _transcript(f"{number:03d}")["asterisk_cdr_rows"]:  # type: ignore[attr-defined]
            if line not in lines:
                lines.append(line)
    return lines


async def _world(services: Services) -> int:
    w = RatingWorld(services)
    germany = await w.direction("49", "Germany", min_len=5, max_len=15)
    carrier_a = await w.route("carrier-a", prefix="8")
    carrier_b = await w.route("carrier-b", prefix="9")
    by_second = await w.bill_type("persecond", free_threshold=0, step=1)
    tariff = await w.tariff("de", bill_type=by_second, switch_price="0")
    await w.entry(tariff, germany, "0.60", carrier_a, priority=1)
    await w.entry(tariff, germany, "0.60", carrier_b, priority=2)
    user = await make_user(services, "caller", balance=START, sip_extension="10001", sip_rates_id=tariff)
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", owner="admin", name="asterisk")
    return user.account_id


async def _agi(dispatcher: Dispatcher, script: str, args: dict[str, str], uid: str) -> str:
    outcome = await dispatcher.call(script, args, Credentials(peer_ip="127.0.0.1", transport="agi", call_uid=uid))
    assert outcome.error is None, outcome.error
    return str(outcome.value.result)


async def _holds_as_asterisk_left_them(services: Services, dispatcher: Dispatcher) -> None:
    for prefix in ("015", "017", "019", "024", "026"):
        script, args, uid = _request(prefix)
        assert await _agi(dispatcher, script, args, uid) == "Allowed"
    script, args, uid = _request("025")  # the failover's CONGESTION callFinish did arrive
    assert await _agi(dispatcher, script, args, uid) == "Saved"
    base = {"login": "10001", "destination": "4915100000001", "prior": "1"}
    assert await _agi(dispatcher, "callPrepare", base, "still-up") == "Allowed"  # no CDR yet: the call is up
    assert await _agi(dispatcher, "callPrepare", base, "lost-old") == "Allowed"
    async with services.db.begin() as conn:  # ... and one without any CDR for two hours
        await conn.execute(
            update(reservations).where(reservations.c.call_uid == "lost-old")
            .values(created_at=utcnow() - timedelta(hours=2))
        )  # fmt: skip


async def _cdr_table(services: Services, name: str) -> None:
    """The rows as cdr_pgsql writes them (its standard columns; calldate = start)."""
    columns = ("calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp", "lastdata",
               "duration", "billsec", "disposition", "amaflags", "accountcode", "uniqueid", "userfield")  # fmt: skip
    kinds = {"duration": "integer", "billsec": "integer", "calldate": "timestamp"}
    ddl = ", ".join(f"{c} {kinds.get(c, 'varchar(80)')}" for c in columns)
    async with services.db.begin() as conn:
        await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        await conn.execute(text(f"CREATE TABLE {name} ({ddl})"))
        for fields in csv.reader(io.StringIO("\n".join(master_csv_lines()))):
            row = dict(zip(CSV_COLUMNS, fields, strict=True))
            values: dict[str, object] = {c: row["start"] if c == "calldate" else row[c] for c in columns}
            values["duration"], values["billsec"] = int(row["duration"]), int(row["billsec"])
            if not services.db.is_sqlite:
                values["calldate"] = datetime.strptime(row["start"], "%Y-%m-%d %H:%M:%S")
            params = ", ".join(f":{c}" for c in columns)
            await conn.execute(text(f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({params})"), values)


async def _cdr_rows(services: Services) -> dict[tuple[str, int], tuple[str, int, Decimal, str]]:
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(cdrs))).all()
    return {(r.call_uid, r.prior): (r.status, r.billed_s, Decimal(r.cost), r.route) for r in rows}


async def _open_uids(services: Services) -> list[tuple[str, int]]:
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(reservations.c.call_uid, reservations.c.prior))).all()
    return sorted((r.call_uid, r.prior) for r in rows)


def _actions(report: Report) -> dict[tuple[str, int], str]:
    return {(d.hold.reservation.call_uid, d.hold.reservation.prior): d.action for d in report.decisions}


@pytest.mark.parametrize("source", ["csv", "table"])
async def test_reconcile_charges_what_asterisk_logged_exactly_once(
    services: Services, dispatcher: Dispatcher, tmp_path: Path, source: str
) -> None:
    account = await _world(services)
    await _holds_as_asterisk_left_them(services, dispatcher)
    master = tmp_path / "Master.csv"
    master.write_text("\n".join(master_csv_lines()) + "\n")
    table = f"cdr_reconcile_{'sqlite' if services.db.is_sqlite else 'pg'}"
    await _cdr_table(services, table)
    url = services.settings.database_url

    async def rows(column: str, values: Sequence[str]) -> list[AsteriskCdr]:
        if source == "csv":
            return read_master_csv(master, column, values)
        return await read_cdr_table(url, table, column, values)

    before = await _cdr_rows(services)
    dry = await reconcile(services, rows, dry_run=True, stale_after_s=3600)
    assert _actions(dry) == {
        ("s1-caller2", 1): "charge", ("s2-caller2", 1): "release", ("s3-disa", 1): "charge",
        ("s5-caller2", 2): "charge", ("still-up", 1): "wait", ("lost-old", 1): "stale",
    }  # fmt: skip
    lines = dry.lines()
    assert lines[0].startswith("reconcile (dry run: nothing written): 6 open holds")
    assert any(line.startswith("charge  s3-disa prior 1") and "talk 5 s billed 5 s cost 0.0500 EUR" in line
               and "talk from the callee row" in line for line in lines)  # fmt: skip
    assert lines[-1].startswith("total: charge 3 for 0.1100 EUR; release 1; holds freed 576.0000 EUR;")
    assert "wait 1; stale 1" in lines[-1]
    assert await balance_of(services, account) == START  # a dry run writes nothing
    assert await _cdr_rows(services) == before

    # The real run races a late callFinish of s1 (Asterisk came back): one charge either way.
    late = {"login": "10001", "destination": "4915100000003", "prior": "1", "length": "3", "status": "ANSWER"}
    await asyncio.gather(
        reconcile(services, rows, dry_run=False, stale_after_s=3600), _agi(dispatcher, "callFinish", late, "s1-caller2")
    )
    # talk time: 3 s (s1), 5 s of the callee in the DISA call (its Dial row says 16), 3 s (s5 prior 2)
    assert await balance_of(services, account) == START - Decimal("0.11")
    written = await _cdr_rows(services)
    assert {key: written[key][:3] for key in written} == {
        ("s1-caller2", 1): ("ANSWER", 3, Decimal("0.0300")),
        ("s2-caller2", 1): ("CANCEL", 0, Decimal("0.0000")),  # hung up during callPrepare (017): released
        ("s3-disa", 1): ("ANSWER", 5, Decimal("0.0500")),
        ("s5-caller2", 1): ("CONGESTION", 0, Decimal("0.0000")),  # its own callFinish (025)
        ("s5-caller2", 2): ("ANSWER", 3, Decimal("0.0300")),
    }  # fmt: skip
    assert written[("s5-caller2", 2)][3] == "carrier-b"
    assert await _open_uids(services) == [("lost-old", 1), ("still-up", 1)]  # left alone

    again = await reconcile(services, rows, dry_run=False, stale_after_s=3600)
    assert _actions(again) == {("still-up", 1): "wait", ("lost-old", 1): "stale"}
    assert await balance_of(services, account) == START - Decimal("0.11")
    assert await _cdr_rows(services) == written
    assert await _agi(dispatcher, "callFinish", late, "s1-caller2") == "Saved"  # the stored answer
    assert await balance_of(services, account) == START - Decimal("0.11")
    async with services.db.begin() as conn:
        await conn.execute(text(f"DROP TABLE {table}"))


async def test_cli_reconcile_dry_run_then_apply(
    services: Services, dispatcher: Dispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    account = await _world(services)
    await _holds_as_asterisk_left_them(services, dispatcher)
    master = tmp_path / "Master.csv"
    master.write_text("\n".join(master_csv_lines()) + "\n")
    settings = services.settings
    # The CLI configures structlog for a terminal: here it would bind (and cache) loggers to
    # pytest's captured stderr, closed after this test (as tests/test_cli.py does).
    monkeypatch.setattr("callgate.cli.configure_logging", lambda *a, **k: None)
    monkeypatch.setenv("CALLGATE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CALLGATE_SECRET_FILE", settings.secret_file)
    if settings.redis_url:
        monkeypatch.setenv("CALLGATE_REDIS_URL", settings.redis_url)
    assert await asyncio.to_thread(main, ["reconcile", "--csv", str(master), "--dry-run", "--stale-after", "3600"]) == 0
    out = capsys.readouterr().out
    assert "charge  s1-caller2 prior 1 user caller route carrier-a: ANSWER talk 3 s billed 3 s cost 0.0300 EUR" in out
    assert "stale   lost-old prior 1" in out and "wait    still-up prior 1" in out
    assert await balance_of(services, account) == START
    assert await asyncio.to_thread(main, ["reconcile", "--csv", str(master)]) == 0
    assert "reconcile (applied)" in capsys.readouterr().out
    assert await balance_of(services, account) == START - Decimal("0.11")

    master.write_text('"only","three","columns"\n')
    assert await asyncio.to_thread(main, ["reconcile", "--csv", str(master)]) == 2
    assert "E_INVALID_ARGUMENT: Master.csv line 1: 3 columns" in capsys.readouterr().err


def test_dial_rows_are_matched_by_route_then_by_position(tmp_path: Path) -> None:
    master = tmp_path / "Master.csv"
    master.write_text("\n".join(master_csv_lines()) + "\n")
    dials = [r for r in read_master_csv(master, "uniqueid", ["s5-caller2"]) if r.lastapp == "Dial"]
    first, second = dials  # carrier-a (CONGESTION), carrier-b (ANSWERED)
    # callgate knows only prior 2 (prior 1's record lost): the route still finds its row
    assert assign_dials([(2, "carrier-b")], dials) == {2: second}
    assert assign_dials([(1, "carrier-a"), (2, "carrier-b")], dials) == {1: first, 2: second}
    assert assign_dials([(1, "carrier-b")], dials) == {1: second}
    # routes the dial strings do not show (an operator's own trunk naming): by position
    assert assign_dials([(1, "trunk-x"), (2, "trunk-y"), (3, "trunk-z")], dials) == {1: first, 2: second, 3: None}
    assert names_route(first, "carrier-a") and not names_route(first, "carrier")
    assert not names_route(first, "carrier-b")


def test_talk_time_is_capped_at_the_holds_max_time(tmp_path: Path) -> None:
    master = tmp_path / "Master.csv"
    master.write_text("\n".join(master_csv_lines()) + "\n")
    rows = read_master_csv(master, "uniqueid", ["s3-disa"])
    callee = read_master_csv(master, "channel", ["Local/84915100099905@carrier-a-00000004;2"])
    (dial,) = [r for r in rows if r.lastapp == "Dial"]
    rating = Rating("4915100099905", 1, "Germany", 1, "carrier-a", "8", 1, Decimal("0.60"), Decimal("0"), 1, 0)
    hold = OpenHold(Reservation(1, "s3-disa", 1, 1, Decimal("0.04"), 4, "open", rating.to_json()), 1, "u", utcnow())
    decision = decide(hold, dial, rows, {r.channel: r for r in callee}, now=utcnow(), stale_after_s=60)
    assert (decision.action, decision.talk_s, decision.billed_s, decision.cost) == ("charge", 5, 4, Decimal("0.04"))
    assert "capped at 4 s" in decision.note
