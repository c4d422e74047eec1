"""README "Rate decks", run as written against a real `callgate serve` on the embedded
default, the way tests/test_readme_aliases.py runs the aliases section: the setup block
line by line (every curl must answer `"result": true` and what its comment promises), then
each `$ command` of the session blocks must print what the README shows after it."""

from __future__ import annotations

from pathlib import Path

from tests.readme_sections import served_section
from tests.test_readme_walkthrough import _check_output, _transcript

SECTION = "## Rate decks"


def test_the_rate_decks_section_works_as_written(tmp_path: Path) -> None:
    with served_section(tmp_path, SECTION, blocks=3) as (shell, sessions):
        steps = [step for session in sessions for step in _transcript(session)]
        assert sum(command.startswith("callgate rates import") for command, _ in steps) == 3
        for command, expected in steps:
            assert expected or command.startswith(("printf", "sleep")), f"{command!r} promises nothing"
            _check_output(command, shell.run(command), expected)
    assert shell.cwd.parent == tmp_path and (shell.cwd / "callgate.db").exists()
