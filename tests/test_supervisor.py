"""`callgate serve` with CALLGATE_WORKERS=2, as real processes on PostgreSQL + Redis
(issue 9, item 24): a worker killed with -9 is replaced and the replacement serves; after
a kill -9 of the supervisor no worker goes on serving alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from billing_core.config import Settings
from billing_core.container import Services
from tests.asterisk_sim import run_agi_session
from tests.conftest import BACKENDS
from tests.ports import HOST, free_port, two_workers_env
from tests.test_agi_end_to_end import build_world
from tests.test_metrics import REPO, _wait_healthy


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _workers(parent: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    try:
        with open(f"/proc/{parent}/task/{parent}/children", encoding="ascii") as fh:
            children = [int(pid) for pid in fh.read().split()]
    except FileNotFoundError:
        return set()
    found = set()
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"--multiprocessing-fork" in cmdline and _alive(pid):
            found.add(pid)
    return found


async def _until(check: Callable[[], bool], what: str) -> None:
    for _ in range(600):  # a bound that only ends a broken run; no timing is asserted
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _replaced(parent: int, victim: int, before: set[int]) -> int:
    """Kill -9 `victim`; wait for the supervisor to start a new worker; its pid."""
    os.kill(victim, signal.SIGKILL)
    new: set[int] = set()

    def replaced() -> bool:
        now = _workers(parent)
        new.clear()
        new.update(now - before)
        return len(now) == 2 and victim not in now and len(new) == 1

    await _until(replaced, "a new worker")
    return new.pop()


@pytest.mark.skipif("server" not in BACKENDS, reason="several workers need PostgreSQL and Redis")
@pytest.mark.parametrize("settings", ["server"], indirect=True)
async def test_killed_workers_are_replaced_and_die_with_the_supervisor(
    services: Services, settings: Settings, tmp_path: Path
) -> None:
    await build_world(services, balance="100000.00")
    agi_port, http_port = free_port(), free_port()
    assert settings.redis_url is not None
    env = two_workers_env(settings.database_url, settings.redis_url, tmp_path, agi_port, http_port, log_level="info")
    (tmp_path / "metrics").mkdir()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "callgate.cli", "serve", env=env, cwd=REPO,
                                                    stdout=subprocess.DEVNULL, stderr=log_file)  # fmt: skip
    parent = proc.pid
    orphans: set[int] = set()
    try:
        await _wait_healthy(http_port, proc)
        await _until(lambda: len(_workers(parent)) == 2, "two workers")
        first = _workers(parent)

        # Kill -9 one worker, then the other: both are replaced, so whatever answers below
        # is a restarted worker (the ports are shared, the kernel picks one per connection).
        a, b = sorted(first)
        new_a = await _replaced(parent, a, first)
        new_b = await _replaced(parent, b, {new_a, b})
        assert {new_a, new_b}.isdisjoint(first)
        await _wait_healthy(http_port, proc)
        for n in range(12):
            answer = await run_agi_session(HOST, agi_port, "callPrepare",
                                           query="login=10000&destination=79010000001&prior=1", uniqueid=f"s.{n}")
            assert answer.variables["CALLGATE_RESULT"] == "Allowed", answer.variables
        log = log_path.read_text()
        assert log.count('"event": "supervisor.worker_exited"') == 2
        assert f'"pid": {a}' in log and '"exitcode": -9' in log

        # Kill -9 the supervisor: its workers stop serving and exit on their own.
        orphans = _workers(parent)
        os.kill(parent, signal.SIGKILL)
        await proc.wait()
        await _until(lambda: not any(_alive(pid) for pid in orphans), "the orphaned workers exit")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, agi_port)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)
        for pid in orphans:  # only if the test failed: never leave a worker of ours behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
