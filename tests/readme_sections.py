"""A README section run as written: its first shell block sets up (a fresh directory, its
own ports, `callgate serve &`), the blocks after it are sessions of commands with the
output the README promises (checked by tests/test_readme_walkthrough.py's rules)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import free_port
from tests.test_readme_walkthrough import README, Shell, _run_setup, sh_blocks


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment a new user's shell has: no CALLGATE_* settings, no venv on PATH."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CALLGATE_", "VIRTUAL_ENV"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    return env | {"CALLGATE_TEST_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}


@contextmanager
def served_section(tmp_path: Path, section: str, blocks: int) -> Iterator[tuple[Shell, list[list[str]]]]:
    """The section's shell and its session blocks, with its setup block run (and its
    `callgate serve` stopped afterwards). `blocks`: how many shell blocks it must have."""
    found = sh_blocks(README.read_text(encoding="utf-8"), section)
    assert len(found) == blocks, f"{section}: {len(found)} shell blocks, expected {blocks}"
    setup, *sessions = found
    shell = Shell(README.parent, clean_env(tmp_path), free_port(), free_port())
    serve = _run_setup(shell, setup)
    try:
        yield shell, sessions
    finally:
        serve.terminate()
        serve.wait(timeout=30)
