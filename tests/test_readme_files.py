"""README "Files and the OpenAPI description", run as written against a real `callgate
serve` on the embedded default, the way tests/test_readme_aliases.py runs "Aliases": the
setup block line by line, then each `$ command` of the session block must print what the
README shows after it (the CSV export, its refusal of a bad limit, /openapi.json)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.ports import free_port
from tests.test_readme_walkthrough import README, Shell, _check_output, _run_setup, _transcript, sh_blocks

SECTION = "## Files and the OpenAPI description"


def test_the_files_section_works_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(README.read_text(encoding="utf-8"), SECTION)
    assert len(blocks) == 2, "the section has a setup block and a session block"
    setup, session = blocks
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CALLGATE_", "VIRTUAL_ENV"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env |= {"CALLGATE_TEST_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    shell = Shell(README.parent, env, free_port(), free_port())
    serve = _run_setup(shell, setup)
    try:
        steps = _transcript(session)
        assert [command.split()[0] for command, _ in steps] == ["callgate", "callgate", "curl", "curl", "curl"]
        for command, expected in steps:
            _check_output(command, shell.run(command), expected)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
