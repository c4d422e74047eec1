"""The README's front-door examples (curl and one Python client line per door), run as
written against a real `callgate serve` on the embedded default, the way the walkthrough
test runs its section (tests/test_readme_walkthrough.py: same shell, same rules for the
expected output)."""

from __future__ import annotations

from pathlib import Path

from tests.readme_sections import served_section
from tests.test_readme_walkthrough import _check_output, _transcript

SECTION = "## Front doors: JeraSoft VCS and BILLmanager"


def test_the_readme_front_door_examples_work_as_written(tmp_path: Path) -> None:
    with served_section(tmp_path, SECTION, blocks=3) as (shell, [vcs, billmgr]):
        for block in (vcs, billmgr):
            steps = _transcript(block)
            assert [command.split()[0] for command, _ in steps] == ["curl", "python"]
            for command, expected in steps:
                assert expected, f"the README shows no answer for {command!r}"
                _check_output(command, shell.run(command), expected)
