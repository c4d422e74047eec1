"""README "Files and the OpenAPI description", run as written against a real `callgate
serve` on the embedded default, the way tests/test_readme_aliases.py runs "Aliases": the
setup block line by line, then each `$ command` of the session block must print what the
README shows after it (the CSV export, its refusal of a bad limit, /openapi.json)."""

from __future__ import annotations

from pathlib import Path

from tests.readme_sections import served_section
from tests.test_readme_walkthrough import _check_output, _transcript

SECTION = "## Files and the OpenAPI description"


def test_the_files_section_works_as_written(tmp_path: Path) -> None:
    with served_section(tmp_path, SECTION, blocks=2) as (shell, [session]):
        steps = _transcript(session)
        assert [command.split()[0] for command, _ in steps] == ["callgate", "callgate", "curl", "curl", "curl"]
        for command, expected in steps:
            _check_output(command, shell.run(command), expected)
