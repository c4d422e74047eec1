"""The README's front-door examples (curl and one Python client line per door), run as
written against a real `callgate serve` on the embedded default, the way the walkthrough
test runs its section (tests/test_readme_walkthrough.py: same shell, same rules for the
expected output)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.ports import free_port
from tests.test_readme_walkthrough import README, Shell, _check_output, _run_setup, _transcript, sh_blocks

SECTION = "## Front doors: JeraSoft VCS and BILLmanager"


def test_the_readme_front_door_examples_work_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(README.read_text(encoding="utf-8"), SECTION)
    assert len(blocks) == 3, "a setup block, then one block per door"
    setup, vcs, billmgr = blocks
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CALLGATE_", "VIRTUAL_ENV"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env |= {"CALLGATE_TEST_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    shell = Shell(README.parent, env, free_port(), free_port())
    serve = _run_setup(shell, setup)
    try:
        for block, first_word in ((vcs, "curl"), (billmgr, "curl")):
            steps = _transcript(block)
            assert [command.split()[0] for command, _ in steps] == [first_word, "python"]
            for command, expected in steps:
                assert expected, f"the README shows no answer for {command!r}"
                _check_output(command, shell.run(command), expected)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
