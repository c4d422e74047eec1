"""`callgate dids import` and `callgate maintenance` on the embedded default."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from billing_core.config import Settings
from billing_core.container import Services
from billing_core.numbers.tables import did_stock
from callgate.cli import main


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CALLGATE_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.delenv("CALLGATE_REDIS_URL", raising=False)
    monkeypatch.delenv("CALLGATE_RATES_SOURCE", raising=False)
    monkeypatch.setattr("callgate.cli.configure_logging", lambda *a, **k: None)
    return tmp_path


def _stock() -> list[tuple[str, str, str, bool, bool]]:
    async def read() -> list[tuple[str, str, str, bool, bool]]:
        services = Services.build(Settings.from_env())
        try:
            async with services.db.begin() as conn:
                rows = (await conn.execute(select(did_stock).order_by(did_stock.c.did))).all()
        finally:
            await services.close()
        return [(r.did, r.country, r.area, bool(r.voice_support), bool(r.sms_support)) for r in rows]

    return asyncio.run(read())


def test_dids_import_loads_the_stock_and_reports_bad_lines(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    source = workdir / "numbers.csv"
    source.write_text("did,country,area,sms_support\n+4930555000,Germany,Berlin,yes\n4930555001,Germany,Berlin,\n"
                      "49-30,Germany,Berlin,\n4930555002,,Berlin,\n4930555003,Germany,Berlin,maybe\n")  # fmt: skip
    capsys.readouterr()
    assert main(["dids", "import", str(source)]) == 1  # bad lines: reported, the others loaded
    out, err = capsys.readouterr()
    assert out.strip() == "inserted=2 present=0 errors=3"
    assert [line.split(": ", 1)[1].split(":")[0] for line in err.strip().splitlines()] == ["line 4", "line 5", "line 6"]
    assert _stock() == [
        ("4930555000", "Germany", "Berlin", True, True),
        ("4930555001", "Germany", "Berlin", True, False),
    ]
    source.write_text("did,country,area\n4930555000,Germany,Berlin\n4930555009,Germany,Berlin\n")
    assert main(["dids", "import", str(source)]) == 0
    assert capsys.readouterr().out.strip() == "inserted=1 present=1 errors=0"
    (workdir / "bad.csv").write_text("number,where\n1,2\n")
    assert main(["dids", "import", str(workdir / "bad.csv")]) == 2
    assert "the header needs did,country,area" in capsys.readouterr().err


def test_maintenance_prints_one_line_per_task(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["maintenance"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["task"] for line in lines] == ["dids", "holds", "exchange_rates", "prepaid_codes"]
    assert lines[0]["renewed"] == 0 and "rates unchanged" in lines[2]["note"]
