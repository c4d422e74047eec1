"""Directions: the longest-prefix rule, the CSV reader and the all-or-nothing import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.cache.keys import NS_RATING
from billing_core.container import Services
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating.direction_import import DirectionsFileError, import_directions, read_directions_csv
from billing_core.rating.directions import Direction, DirectionIndex, longest_prefix, normalize_number
from billing_core.rating.tables import directions
from tests.factories import make_key

DEMO_CSV = Path(__file__).resolve().parent.parent / "billing_core" / "demo" / "directions.csv"
HEADER = "code,direction,min_len,max_len\n"


def _d(id_: int, code: str, name: str, min_len: int = 1, max_len: int = 32) -> Direction:
    return Direction(id_, code, name, min_len, max_len)


RULE_ROWS = [
    _d(1, "7", "Russia", 10, 11),
    _d(2, "79", "Russia Mobile", 11, 11),
    _d(3, "7901", "Russia Mobile - Tele2", 11, 11),
    _d(4, "49", "Germany", 8, 15),
]


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("79011234567", "Russia Mobile - Tele2"),  # longest code wins
        ("79991234567", "Russia Mobile"),
        ("74951234567", "Russia"),
        ("7901123456", "Russia"),  # 10 digits: 7901/79 do not admit the length, 7 does
        ("790112345678", None),  # 12 digits: no Russian direction admits it
        ("4930123456", "Germany"),
        ("4412345678", None),  # no code
        ("", None),
    ],
)
def test_longest_prefix_scan_and_mapping_agree(number: str, expected: str | None) -> None:
    scanned = longest_prefix(RULE_ROWS, number)
    indexed = longest_prefix({d.code: d for d in RULE_ROWS}, number)
    assert (scanned.direction if scanned else None) == expected
    assert scanned == indexed
    assert DirectionIndex.build(RULE_ROWS).resolve(number) == scanned


def test_normalize_number() -> None:
    assert normalize_number("+79011234567") == "79011234567"
    assert normalize_number(" 49301234 ") == "49301234"
    for bad in ("", "+", "7901-123", "abc", "++7", "1" * 33):
        with pytest.raises(ApiError) as caught:
            normalize_number(bad)
        assert caught.value.code is ErrorCode.E_INVALID_ARGUMENT


def _write(tmp_path: Path, body: str, name: str = "dirs.csv") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_read_csv_tags_lines_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeff" + HEADER + "7,Russia,11,11\n\n79,Russia Mobile,11,11,extra\n44,UK\n")
    rows = read_directions_csv(path)
    assert [r["_line"] for r in rows] == ["2", "4", "5"]
    assert rows[0] == {"code": "7", "direction": "Russia", "min_len": "11", "max_len": "11", "_line": "2"}
    assert rows[1]["_extra"] == "1"
    assert rows[2]["min_len"] == "" and rows[2]["max_len"] == ""


@pytest.mark.parametrize(
    "body",
    [
        "",
        "code,name,min_len,max_len\n7,Russia,11,11\n",
        "code,direction,min_len\n7,Russia,11\n",
        "direction,code,min_len,max_len\nRussia,7,11,11\n",
        "code,direction,min_len,max_len,comment\n7,Russia,11,11,x\n",
    ],
)
def test_read_csv_rejects_a_bad_header(tmp_path: Path, body: str) -> None:
    with pytest.raises(DirectionsFileError):
        read_directions_csv(_write(tmp_path, body))


def test_read_csv_rejects_non_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + "7,Москва,11,11\n".encode("cp1251"))
    with pytest.raises(DirectionsFileError, match="UTF-8"):
        read_directions_csv(path)
    with pytest.raises(DirectionsFileError, match="cannot read"):
        read_directions_csv(tmp_path / "absent.csv")


async def _rows(services: Services) -> dict[str, tuple[int, str, int, int]]:
    async with services.db.begin() as conn:
        found = (await conn.execute(select(directions))).all()
    return {r.code: (r.id, r.direction, r.min_len, r.max_len) for r in found}


async def test_demo_file_imports_and_resolves(services: Services, dispatcher: Dispatcher) -> None:
    rows = read_directions_csv(DEMO_CSV)
    assert len(rows) >= 40
    report = await import_directions(services.db, rows)
    await services.cache.invalidate(NS_RATING)
    assert report.ok and report.applied
    assert (report.inserted, report.updated, report.unchanged) == (len(rows), 0, 0)
    stored = await _rows(services)
    assert len(stored) == len(rows)
    assert stored["7901"][1:] == ("Russia Mobile - Tele2", 11, 11)

    key = await make_key(services, level=0)
    cred = Credentials(peer_ip="127.0.0.1", transport="test", apikey=key)
    expectations = {
        "79271871234": "Russia Mobile - Megafon",  # the spec's example
        "79011234567": "Russia Mobile - Tele2",
        "79991234567": "Russia Mobile",
        "74951234567": "Russia - Moscow",
        "77011234567": "Kazakhstan Mobile",
        "491701234567": "Germany Mobile",
        "4930123456": "Germany - Berlin",
        "447911123456": "United Kingdom Mobile",
        "12125550100": "USA - New York",
        "33612345678": "France Mobile",
    }
    for number, name in expectations.items():
        outcome = await dispatcher.call("resolveDirection", {"number": number}, cred)
        assert outcome.ok, (number, outcome.error)
        assert outcome.value.text == name, number


async def test_reimport_updates_changed_rows_and_keeps_ids(services: Services) -> None:
    first = [
        {"code": "7", "direction": "Russia", "min_len": "11", "max_len": "11"},
        {"code": "79", "direction": "Russia Mobile", "min_len": "11", "max_len": "11"},
    ]
    assert (await import_directions(services.db, first)).inserted == 2
    before = await _rows(services)
    second = [
        {"code": "7", "direction": "Russia", "min_len": "11", "max_len": "11"},  # unchanged
        {"code": "79", "direction": "Russia Mobile (all)", "min_len": "10", "max_len": "11"},  # updated
        {"code": "49", "direction": "Germany", "min_len": "8", "max_len": "15"},  # new
    ]
    report = await import_directions(services.db, second)
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (1, 1, 1, [])
    after = await _rows(services)
    assert after["79"] == (before["79"][0], "Russia Mobile (all)", 10, 11)
    assert after["7"] == before["7"]
    assert after["49"][1:] == ("Germany", 8, 15)


async def test_bad_rows_are_reported_by_line_and_nothing_is_written(services: Services, tmp_path: Path) -> None:
    await import_directions(services.db, [{"code": "7", "direction": "Russia", "min_len": "11", "max_len": "11"}])
    body = (
        HEADER
        + "\n".join(
            [
                "7,Russia renamed,11,11",  # line 2: fine, but must not be applied
                "49,Germany,8,15",  # line 3: fine
                "7a,Bad code,11,11",  # line 4
                "44,,11,12",  # line 5: empty name
                "33,France,12,11",  # line 6: min > max
                "1,USA,0,11",  # line 7: length out of 1..32
                "1212,USA - NY,11,40",  # line 8: length out of 1..32
                "49,Germany again,8,15",  # line 9: duplicate of line 3
                "7901,Tele2,1,3",  # line 10: max_len shorter than the code
                "36,Hungary,x,11",  # line 11
                "39,Italy,8,12,extra",  # line 12
                "420,Czechia",  # line 13: missing fields
            ]
        )
        + "\n"
    )
    report = await import_directions(services.db, read_directions_csv(_write(tmp_path, body)))
    assert not report.ok and not report.applied
    assert (report.inserted, report.updated) == (0, 0)
    assert [r.line for r in report.rejected] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    reasons = {r.line: r.reason for r in report.rejected}
    assert "code" in reasons[4]
    assert "empty" in reasons[5]
    assert "greater than" in reasons[6]
    assert "line 3" in reasons[9]
    assert "shorter than the code" in reasons[10]
    assert "more than" in reasons[12]
    assert "line 4: 7a:" in report.summary()
    stored = await _rows(services)
    assert set(stored) == {"7"} and stored["7"][1] == "Russia"


async def test_rows_without_line_numbers_count_from_line_two(services: Services) -> None:
    rows = [
        {"code": "7", "direction": "Russia", "min_len": "11", "max_len": "11"},
        {"code": "", "direction": "Nothing", "min_len": "1", "max_len": "2"},
    ]
    report = await import_directions(services.db, rows)
    assert [r.line for r in report.rejected] == [3]
    async with services.db.begin() as conn:
        assert (await conn.execute(select(func.count()).select_from(directions))).scalar() == 0


async def test_empty_file_is_a_no_op(services: Services, tmp_path: Path) -> None:
    report = await import_directions(services.db, read_directions_csv(_write(tmp_path, HEADER)))
    assert report.ok and report.applied
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 0)
