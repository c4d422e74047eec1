"""README "Rate decks", run as written against a real `callgate serve` on the embedded
default, the way tests/test_readme_aliases.py runs the aliases section: the setup block
line by line (every curl must answer `"result": true` and what its comment promises), then
each `$ command` of the session blocks must print what the README shows after it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.ports import free_port
from tests.test_readme_walkthrough import README, Shell, _check_output, _run_setup, _transcript, sh_blocks

SECTION = "## Rate decks"


def test_the_rate_decks_section_works_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(README.read_text(encoding="utf-8"), SECTION)
    assert len(blocks) == 3, "the section has a setup block and two session blocks"
    setup, *sessions = blocks
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CALLGATE_", "VIRTUAL_ENV"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env |= {"CALLGATE_TEST_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    shell = Shell(README.parent, env, free_port(), free_port())
    serve = _run_setup(shell, setup)
    try:
        steps = [step for session in sessions for step in _transcript(session)]
        assert sum(command.startswith("callgate rates import") for command, _ in steps) == 3
        for command, expected in steps:
            assert expected or command.startswith(("printf", "sleep")), f"{command!r} promises nothing"
            _check_output(command, shell.run(command), expected)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert shell.cwd.parent == tmp_path and (shell.cwd / "callgate.db").exists()
