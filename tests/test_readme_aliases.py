"""README "Aliases", run as written against a real `callgate serve` on the embedded default,
the way tests/test_readme_walkthrough.py runs the provisioning walkthrough: the setup
block line by line (every curl must answer `"result": true` and what its comment promises),
then each `$ command` of the session block must print what the README shows after it."""

from __future__ import annotations

from pathlib import Path

from tests.readme_sections import served_section
from tests.test_readme_walkthrough import _check_output, _transcript

SECTION = "## Aliases"


def test_the_aliases_section_works_as_written(tmp_path: Path) -> None:
    with served_section(tmp_path, SECTION, blocks=2) as (shell, [session]):
        steps = _transcript(session)
        assert [command.split()[:2] for command, _ in steps[:2]] == [["callgate", "agi"], ["callgate", "agi"]]
        for command, expected in steps:
            _check_output(command, shell.run(command), expected)
    assert shell.cwd.parent == tmp_path and (shell.cwd / "callgate.db").exists()
