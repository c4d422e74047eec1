"""README "Direct numbers", run as written against a real `callgate serve` on the embedded
default, the way tests/test_readme_walkthrough.py runs the provisioning walkthrough: the
setup block line by line, then each `$ command` of the session block must print what the
README shows after it (an order from the local pool, and its first renewal)."""

from __future__ import annotations

from pathlib import Path

from tests.readme_sections import served_section
from tests.test_readme_walkthrough import _check_output, _transcript

SECTION = "## Direct numbers"


def test_the_direct_numbers_section_works_as_written(tmp_path: Path) -> None:
    with served_section(tmp_path, SECTION, blocks=2) as (shell, [session]):
        steps = _transcript(session)
        assert [command.split()[0] for command, _ in steps].count("callgate") == 3
        for command, expected in steps:
            _check_output(command, shell.run(command), expected)
    assert shell.cwd.parent == tmp_path and (shell.cwd / "callgate.db").exists()
