"""The spool's backlog on /metrics: what is still waiting to be replayed, what was set aside
for an operator, and how old the oldest waiting request is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from billing_core.container import Services
from billing_core.http import metrics
from billing_core.spool import ReplayVerdict, Spool, SpoolBacklog
from tests.http_support import HOST, serve


def _gauges(text: str) -> dict[str, float]:
    found = re.findall(r"^(callgate_spool_(?:pending|failed|oldest_age_seconds)) (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


def _scrape(backlog: SpoolBacklog) -> dict[str, float]:
    return {family.name: family.samples[0].value for family in backlog.collect()}


def _stamp(path: Path) -> float:
    return int(path.name.partition("-")[0]) / 1e9


async def test_backlog_counts_pending_and_failed_and_ages_the_oldest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    now = 0.0
    backlog = SpoolBacklog(spool, clock=lambda: now)
    assert _scrape(backlog) == {"callgate_spool_pending": 0, "callgate_spool_failed": 0,
                                "callgate_spool_oldest_age_seconds": 0}

    first = spool.append({"method": "callFinish", "n": 1})
    second = spool.append({"method": "callFinish", "n": 2})
    now = _stamp(first) + 42.5
    scraped = _scrape(backlog)
    assert scraped["callgate_spool_pending"] == 2 and scraped["callgate_spool_failed"] == 0
    assert scraped["callgate_spool_oldest_age_seconds"] == pytest.approx(42.5, abs=1e-3)

    # The first cannot ever succeed (set aside); the database is still away for the second.
    verdicts = iter([ReplayVerdict.FAILED, ReplayVerdict.RETRY])

    async def apply(_item: dict[str, object]) -> str:
        return next(verdicts)

    report = await spool.replay(apply)
    assert (report.failed, report.pending) == (1, 1)
    scraped = _scrape(backlog)
    assert scraped["callgate_spool_pending"] == 1 and scraped["callgate_spool_failed"] == 1
    assert scraped["callgate_spool_oldest_age_seconds"] == pytest.approx(now - _stamp(second), abs=1e-3)


async def test_a_file_not_named_by_append_is_aged_by_its_mtime(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.directory.mkdir(parents=True)
    stray = spool.directory / "copied-by-hand.json"
    stray.write_text("{}", encoding="utf-8")
    backlog = SpoolBacklog(spool, clock=lambda: stray.stat().st_mtime + 7.0)
    assert _scrape(backlog)["callgate_spool_oldest_age_seconds"] == pytest.approx(7.0)


async def test_metrics_endpoint_shows_the_backlog_of_the_configured_spool(services: Services) -> None:
    spool = Spool(services.settings.spool_dir)
    async with serve(services) as api:
        before = _gauges((await api.request("GET", f"http://{HOST}:{api.port}/metrics")).text)
        assert before == {"callgate_spool_pending": 0.0, "callgate_spool_failed": 0.0,
                          "callgate_spool_oldest_age_seconds": 0.0}
        spool.append({"method": "callFinish"})
        spool.append({"method": "callFinish"})
        after = _gauges((await api.request("GET", f"http://{HOST}:{api.port}/metrics")).text)
    assert after["callgate_spool_pending"] == 2.0 and after["callgate_spool_failed"] == 0.0
    assert after["callgate_spool_oldest_age_seconds"] >= 0.0


def test_multiprocess_exposition_keeps_the_backlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With several workers the counters come from the workers' files; the backlog is read
    # from the shared directory once, not added up per worker.
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    spool = Spool(tmp_path / "spool")
    spool.append({"method": "callFinish"})
    body, _ = metrics.exposition((SpoolBacklog(spool),))
    assert _gauges(body.decode())["callgate_spool_pending"] == 1.0
