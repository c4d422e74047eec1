"""Rate decks: `callgate rates import FILE.csv --tariff NAME` (billing_core.rating.decks).

A deck is streamed, staged (COPY on PostgreSQL) and merged all or nothing; it replaces the
tariff's entries (kept ids for kept slots); bad rows are reported by line and nothing is
loaded; the longest-prefix answer is the same whether the directions are few (kept whole
in memory) or many (read by the number's prefixes), and callPrepare prices by the deck.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing_core.api.dispatch import Dispatcher
from billing_core.cache.keys import NS_RATING
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating import bulk_load
from billing_core.rating import directions as direction_rules
from billing_core.rating.bulk_load import DeckFileError
from billing_core.rating.decks import import_deck
from billing_core.rating.tables import directions, tariff_entries
from callgate.cli import main
from tests.factories import make_user
from tests.rating_world import RatingWorld, prepare, server_key, text_of

HEADER = "code,direction,cost,route,priority\n"
ZONES = 300  # generated codes 3000..3299 beside the hand-written ones


def _deck(tmp_path: Path, rows: list[str], name: str = "deck.csv", zones: int = ZONES) -> Path:
    generated = [f"{3000 + i},Zone {i},0.{1000 + i:04d},carrier-a,1" for i in range(zones)]
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(rows + generated) + "\n", encoding="utf-8")
    return path


BASE_ROWS = [
    "49,Germany,0.02,carrier-a,1",
    "49,Germany,0.03,carrier-b,2",
    "4915,Germany Mobile,0.20,carrier-a,1",
    "491511,Germany Mobile - Telekom,0.1234,carrier-b,",  # empty priority = 1
    "7,Russia,0.05,carrier-a,1",
]


async def _world(services: Services) -> tuple[RatingWorld, int, int, int]:
    w = RatingWorld(services)
    a = await w.route("carrier-a", prefix="a/")
    b = await w.route("carrier-b", prefix="b/")
    tariff = await w.tariff("wholesale", bill_type="bysecond")
    return w, tariff, a, b


async def _entries(services: Services, tariff_id: int) -> dict[tuple[str, int], tuple[int, Decimal, int]]:
    """(code, priority) -> (entry id, cost, route id) of the tariff's entries."""
    query = (
        select(directions.c.code, tariff_entries.c.priority, tariff_entries.c.id, tariff_entries.c.cost,
               tariff_entries.c.route_id)
        .join(directions, directions.c.id == tariff_entries.c.direction_id)
        .where(tariff_entries.c.tariff_id == tariff_id)
    )  # fmt: skip
    async with services.db.begin() as conn:
        rows = (await conn.execute(query)).all()
    return {(r.code, r.priority): (r.id, r.cost, r.route_id) for r in rows}


async def _direction_names(services: Services) -> dict[str, tuple[str, int, int]]:
    async with services.db.begin() as conn:
        rows = (await conn.execute(select(directions))).all()
    return {r.code: (r.direction, r.min_len, r.max_len) for r in rows}


async def test_a_deck_is_imported(services: Services, tmp_path: Path) -> None:
    w, tariff, a, b = await _world(services)
    kept = await w.direction("7", "Russia (all)", min_len=11, max_len=11)  # already there: stays as it is
    report = await import_deck(services.db, _deck(tmp_path, BASE_ROWS), tariff="wholesale")
    assert report.ok and report.applied, report.summary()
    assert (report.rows, report.inserted, report.updated, report.deleted) == (305, 305, 0, 0)
    assert report.directions_added == 303  # 49, 4915, 491511 and the 300 zones; 7 existed
    entries = await _entries(services, tariff)
    assert len(entries) == 305
    assert entries[("49", 1)][1:] == (Decimal("0.0200"), a)
    assert entries[("49", 2)][1:] == (Decimal("0.0300"), b)
    assert entries[("491511", 1)][1:] == (Decimal("0.1234"), b)
    assert entries[("3299", 1)][1:] == (Decimal("0.1299"), a)
    names = await _direction_names(services)
    assert names["4915"] == ("Germany Mobile", 1, 32)  # a new direction admits any length
    assert names["7"] == ("Russia (all)", 11, 11)  # an existing one keeps its name and lengths
    async with services.db.begin() as conn:
        russia = (await conn.execute(select(directions.c.id).where(directions.c.code == "7"))).scalar_one()
    assert russia == kept


async def test_bad_rows_are_reported_by_line_and_nothing_is_loaded(services: Services, tmp_path: Path) -> None:
    w, tariff, a, _ = await _world(services)
    before_dir = await w.direction("44", "United Kingdom")
    await w.entry(tariff, before_dir, "0.01", a)
    bad = [
        "49,Germany,0.02,carrier-a,1",  # line 2: fine (and must not be loaded)
        "4x9,Bad code,0.02,carrier-a,1",  # 3
        "33,,0.02,carrier-a,1",  # 4: empty name
        "34,Spain,-0.01,carrier-a,1",  # 5: negative
        "35,Portugal,0.00001,carrier-a,1",  # 6: more than 4 decimals
        "36,Hungary,cheap,carrier-a,1",  # 7
        "39,Italy,0.02,carrier-z,1",  # 8: no such route
        "40,Romania,0.02,carrier-a,0",  # 9: priority out of 1..99
        "41,Switzerland,0.02,carrier-a",  # 10: a field missing
        "43,Austria,0.02,carrier-a,1,extra",  # 11: one field too many
        "49,Germany again,0.03,carrier-a,1",  # 12: (49, 1) again
        "45,Denmark,NaN,carrier-a,1",  # 13
    ]
    report = await import_deck(services.db, _deck(tmp_path, bad), tariff="wholesale")
    assert not report.ok and not report.applied
    assert [r.line for r in report.rejected] == list(range(3, 14))
    reasons = {r.line: r.reason for r in report.rejected}
    assert "code" in reasons[3] and "empty" in reasons[4] and "negative" in reasons[5]
    assert "decimal places" in reasons[6] and "decimal number" in reasons[7]
    assert "no route 'carrier-z'" in reasons[8] and "priority" in reasons[9]
    assert "4 fields" in reasons[10] and "6 fields" in reasons[11]
    assert "duplicate" in reasons[12] and "line 2" in reasons[12]
    assert "line 8: 39: no route 'carrier-z' of admin" in report.summary()
    # nothing was loaded: not the good rows, not one direction
    assert set(await _entries(services, tariff)) == {("44", 1)}
    assert set(await _direction_names(services)) == {"44"}


async def test_bad_rows_beyond_the_cap_are_counted(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _world(services)
    monkeypatch.setattr(bulk_load, "MAX_REPORTED", 5)
    rows = [f"{50 + i},Zone,0.02,nowhere,1" for i in range(12)]
    report = await import_deck(services.db, _deck(tmp_path, rows), tariff="wholesale")
    assert [r.line for r in report.rejected] == [2, 3, 4, 5, 6] and report.rejected_total == 12
    assert report.summary().splitlines()[-1] == "… and 7 more bad rows"


async def test_a_reimport_replaces_the_tariffs_entries(services: Services, tmp_path: Path) -> None:
    _, tariff, a, b = await _world(services)
    assert (await import_deck(services.db, _deck(tmp_path, BASE_ROWS), tariff="wholesale")).applied
    first = await _entries(services, tariff)
    second_rows = [
        "49,Germany,0.02,carrier-a,1",  # unchanged
        "4915,Germany Mobile,0.25,carrier-b,1",  # cost and route changed
        "491511,Germany Mobile - Telekom,0.1234,carrier-b,1",  # unchanged
        "7,Russia,0.05,carrier-a,1",  # unchanged
        "7,Russia,0.07,carrier-b,2",  # new slot
        # (49, 2) and zones 3150.. are gone
    ]
    report = await import_deck(services.db, _deck(tmp_path, second_rows, "second.csv", zones=150), tariff="wholesale")
    assert report.applied, report.summary()
    assert (report.inserted, report.updated, report.unchanged, report.deleted) == (1, 1, 153, 151)
    after = await _entries(services, tariff)
    assert len(after) == 155 and ("49", 2) not in after and ("3150", 1) not in after
    assert after[("4915", 1)] == (first[("4915", 1)][0], Decimal("0.2500"), b)  # same entry, new terms
    assert after[("49", 1)] == first[("49", 1)]
    assert after[("7", 2)][1:] == (Decimal("0.0700"), b)
    # the same file again changes nothing
    again = await import_deck(services.db, tmp_path / "second.csv", tariff="wholesale")
    assert (again.inserted, again.updated, again.unchanged, again.deleted) == (0, 0, 155, 0)
    assert await _entries(services, tariff) == after
    # the directions the first deck added stay (other tariffs may use them)
    assert "3299" in await _direction_names(services)
    assert a != b


async def test_unknown_tariff_and_bad_header(services: Services, tmp_path: Path) -> None:
    await _world(services)
    with pytest.raises(ApiError) as caught:
        await import_deck(services.db, _deck(tmp_path, BASE_ROWS), tariff="retail")
    assert caught.value.code is ErrorCode.E_NOT_EXIST
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("code,name,cost,route,priority\n49,Germany,0.02,carrier-a,1\n", encoding="utf-8")
    with pytest.raises(DeckFileError, match="bad header"):
        await import_deck(services.db, wrong, tariff="wholesale")
    async with services.db.begin() as conn:
        assert (await conn.execute(select(func.count()).select_from(tariff_entries))).scalar_one() == 0


@pytest.mark.parametrize("index_max", [direction_rules.INDEX_MAX, 10])
async def test_longest_prefix_after_import(
    services: Services, dispatcher: Dispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index_max: int
) -> None:
    """Few directions (every one in memory) or many (INDEX_MAX 10: read by the number's
    prefixes, the tariff's entries per direction): the same answers."""
    monkeypatch.setattr(direction_rules, "INDEX_MAX", index_max)
    w, _, _, _ = await _world(services)
    await w.direction("4930", "Germany - Berlin", min_len=11, max_len=12)  # existing, with a length range
    rows = [*BASE_ROWS, "4930,Berlin,0.01,carrier-a,1"]
    assert (await import_deck(services.db, _deck(tmp_path, rows), tariff="wholesale")).applied
    await services.cache.invalidate(NS_RATING)
    gens = await services.cache.generations()
    meta = await direction_rules.direction_meta(services.db, services.cache, gens)
    assert meta.small is (index_max > ZONES) and meta.lengths == (6, 4, 2, 1)
    expected = {
        "4915112345678": "Germany Mobile - Telekom",
        "4915212345678": "Germany Mobile",
        "49301234567": "Germany - Berlin",
        "4930123": "Germany",  # too short for Berlin's 11..12: falls back to 49
        "3042555": "Zone 42",
        "71234567890": "Russia",
    }
    for number, name in expected.items():
        for cache_state in (gens, None):  # the cache, then straight from the database
            found = await services.rating.resolve_direction(cache_state, number)
            assert found is not None and found.direction == name, (number, cache_state)
    assert await services.rating.resolve_direction(gens, "3312345678") is None

    key = await server_key(services)
    await make_user(services, "carol", balance=Decimal("1000"), sip_extension="20001",
                    sip_rates_id=await _tariff_id(services))  # fmt: skip
    answer = text_of(await prepare(dispatcher, key, "carol", "4915112345678", call_uid="deck-1"))
    assert answer.result == "Allowed"
    assert "carrier-b" in answer.text and "b/" in answer.text  # 491511's route
    failover = text_of(await prepare(dispatcher, key, "carol", "4930555", call_uid="deck-2", prior="2"))
    assert failover.result == "Allowed" and "carrier-b" in failover.text  # (49, 2)
    unroutable = text_of(await prepare(dispatcher, key, "carol", "3312345678", call_uid="deck-3"))
    assert unroutable.text == "Declined E_UNROUTABLE"


async def _tariff_id(services: Services) -> int:
    from billing_core.rating.tables import tariffs

    async with services.db.begin() as conn:
        return int((await conn.execute(select(tariffs.c.id).where(tariffs.c.name == "wholesale"))).scalar_one())


def test_the_cli_prints_plain_progress_lines_off_a_terminal(
    services: Services, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`callgate rates import` as run from cron or a pipe: progress as plain lines on stderr,
    the summary and the bad lines on stdout, and its exit codes."""

    async def setup() -> None:
        own = Services.build(settings)
        try:
            await _world(own)
        finally:
            await own.close()

    asyncio.run(setup())
    monkeypatch.setenv("CALLGATE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CALLGATE_SECRET_FILE", settings.secret_file)
    if settings.redis_url:
        monkeypatch.setenv("CALLGATE_REDIS_URL", settings.redis_url)
    else:
        monkeypatch.delenv("CALLGATE_REDIS_URL", raising=False)
    monkeypatch.setattr("callgate.cli.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(bulk_load, "PROGRESS_EVERY", 50)

    assert main(["rates", "import", str(_deck(tmp_path, BASE_ROWS)), "--tariff", "wholesale"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("tariff wholesale (id 1): rows=305 inserted=305 ")
    progress = err.splitlines()
    assert progress[0] == "rates import: reading and staging (305 rows)"
    assert "rates import: reading and staging: 100/305 rows (32%)" in progress
    assert any(line.startswith("rates import: reading and staging: done, 305 rows,") for line in progress)
    assert progress[-2] == "rates import: merging into the tariff"
    assert progress[-1].startswith("rates import: merging into the tariff: done,")
    assert "\x1b[" not in err  # no terminal control codes in a log

    bad = _deck(tmp_path, ["49,Germany,0.02,carrier-z,1"], "bad.csv")
    assert main(["rates", "import", str(bad), "--tariff", "wholesale"]) == 1
    out, _ = capsys.readouterr()
    assert "rejected=1 applied=no" in out and "line 2: 49: no route 'carrier-z' of admin" in out
    assert main(["rates", "import", str(bad), "--tariff", "nope"]) == 2
    assert "E_NOT_EXIST" in capsys.readouterr().err

    dirs = tmp_path / "dirs.csv"
    dirs.write_text("code,direction,min_len,max_len\n49,Germany,10,13\n", encoding="utf-8")
    assert main(["directions", "import", str(dirs)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("inserted=0 updated=1 unchanged=0 rejected=0 applied=yes")  # 49 came with the deck
    assert err.splitlines()[0] == "directions import: reading and staging (1 rows)"
