"""Prometheus metrics of FastAGI sessions, and one consistent /metrics over several workers.

In process: every session is counted once when it is over, by script, CALLGATE_RESULT,
CALLGATE_ERROR and how it ended, with bounded labels. With `callgate serve` and two workers
(real processes, PostgreSQL and Redis): every scrape, whichever worker answers it, counts
the sessions of both workers.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from billing_core.config import Settings
from fastagi.contract import VAR_ANSWER, VAR_ERROR, VAR_RESULT
from fastagi.messages import AGIAnswer, AGIRequest
from fastagi.server import FastAGIServer, ServerConfig
from tests.asterisk_sim import run_agi_session
from tests.conftest import BACKENDS
from tests.ports import HOST, free_port, two_workers_env

REPO = Path(__file__).resolve().parents[1]


def _sessions(script: str, result: str, error: str, outcome: str) -> float:
    labels = {"script": script, "result": result, "error": error, "outcome": outcome}
    return REGISTRY.get_sample_value("callgate_agi_sessions_total", labels) or 0.0


def _durations(script: str) -> float:
    return REGISTRY.get_sample_value("callgate_agi_session_duration_seconds_count", {"script": script}) or 0.0


async def _declining(request: AGIRequest) -> AGIAnswer:
    code = "E_INSUFFICIENT_MONEY" if request.script == "callPrepare" else "E_NOT_A_CODE"
    return AGIAnswer({VAR_RESULT: "Declined", VAR_ERROR: code, VAR_ANSWER: f"Declined {code}"})


@pytest.fixture
async def agi_port() -> AsyncIterator[int]:
    server = FastAGIServer(_declining, ServerConfig(env_timeout_s=0.3, reply_timeout_s=2.0, dispatch_timeout_s=2.0))
    await server.start(HOST, 0)
    try:
        yield server.port
    finally:
        server.close()
        await server.wait_closed()


async def test_each_session_is_counted_once_with_bounded_labels(agi_port: int) -> None:
    declined = _sessions("callPrepare", "Declined", "E_INSUFFICIENT_MONEY", "answered")
    foreign = _sessions("-", "Declined", "-", "answered")
    prepare_durations, foreign_durations = _durations("callPrepare"), _durations("-")

    await run_agi_session(HOST, agi_port, "callPrepare", query="destination=1")
    await run_agi_session(HOST, agi_port, "callPrepare", query="destination=2")
    # A script callgate does not serve, and an error code that is not callgate's: both "-",
    # so a peer cannot grow the series.
    await run_agi_session(HOST, agi_port, "someoneElsesScript", query="x=1")

    assert _sessions("callPrepare", "Declined", "E_INSUFFICIENT_MONEY", "answered") == declined + 2
    assert _sessions("-", "Declined", "-", "answered") == foreign + 1
    assert _sessions("someoneElsesScript", "Declined", "E_NOT_A_CODE", "answered") == 0.0
    assert _durations("callPrepare") == prepare_durations + 2
    assert _durations("-") == foreign_durations + 1


async def test_a_session_without_an_env_block_is_counted_as_it_ended(agi_port: int) -> None:
    timed_out = _sessions("-", "-", "-", "env_timeout")
    reader, writer = await asyncio.open_connection(HOST, agi_port)
    writer.write(b"agi_network: yes\n")  # and nothing more: the env block never ends
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server
    writer.close()
    for _ in range(50):  # the count is taken when the transport is gone: a moment later
        if _sessions("-", "-", "-", "env_timeout") == timed_out + 1:
            break
        await asyncio.sleep(0.02)
    assert _sessions("-", "-", "-", "env_timeout") == timed_out + 1


# --- two workers ------------------------------------------------------------------------------


async def _wait_healthy(http_port: int, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert proc.returncode is None, "callgate serve exited"
            try:
                async with session.get(f"http://{HOST}:{http_port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("callgate serve did not become healthy")


def _metric(exposition: str, labels: str) -> float:
    match = re.search(r"^callgate_agi_sessions_total\{" + re.escape(labels) + r"\} (\S+)$", exposition, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.skipif("server" not in BACKENDS, reason="several workers need PostgreSQL and Redis")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_every_scrape_counts_the_sessions_of_every_worker(settings: Settings, tmp_path: Path) -> None:
    agi_port, http_port = free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by a run before: unreadable")  # must be removed
    assert settings.redis_url is not None
    env = two_workers_env(settings.database_url, settings.redis_url, tmp_path, agi_port, http_port, log_level="warning")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "callgate.cli", "serve", env=env, cwd=REPO,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _wait_healthy(http_port, proc)
        sessions = 24
        for n in range(sessions):  # one connection each: the kernel spreads them over the workers
            answer = await run_agi_session(HOST, agi_port, "noSuchScript", uniqueid=f"9.{n}")
            assert answer.variables[VAR_ERROR] == "E_UNKNOWN_METHOD"
        served_by = {path.name for path in metrics_dir.glob("counter_*.db")}
        assert len(served_by) == 2, served_by  # both workers counted something, the stale file is gone

        labels = 'error="E_UNKNOWN_METHOD",outcome="answered",result="Declined",script="-"'
        async with aiohttp.ClientSession() as session:
            for _ in range(6):  # each scrape goes to one worker or the other
                # A new connection per scrape, so that SO_REUSEPORT can pick either worker.
                async with session.get(f"http://{HOST}:{http_port}/metrics",
                                       headers={"Connection": "close"}) as response:
                    assert response.status == 200
                    assert _metric(await response.text(), labels) == sessions
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)
