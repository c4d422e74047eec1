"""The test command says which backends ran, and never drops one silently under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def _pytest(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CALLGATE_TEST_", "CI"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_ci_fails_when_a_server_does_not_answer() -> None:
    closed = free_port()
    done = _pytest(
        "--collect-only", "tests/test_fixture_copies.py",
        CALLGATE_TEST_BACKENDS="auto", CI="true", CALLGATE_TEST_PG_DSN=f"postgresql://postgres@127.0.0.1:{closed}/postgres",
    )  # fmt: skip
    assert done.returncode != 0
    assert "CI=true: PostgreSQL or Redis does not answer" in done.stdout + done.stderr


def test_without_ci_the_embedded_backend_runs_and_the_summary_says_so() -> None:
    closed = free_port()
    done = _pytest(
        "tests/test_rating.py", "-k", "test_leading_plus",
        CALLGATE_TEST_BACKENDS="auto", CALLGATE_TEST_PG_DSN=f"postgresql://postgres@127.0.0.1:{closed}/postgres",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "callgate test backends run: embedded (" in done.stdout
    assert "server (" not in done.stdout.split("callgate test backends run:")[1].splitlines()[0]
