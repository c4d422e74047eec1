"""The README's method table is the registry: every method it lists is registered, in the
spec section the table puts it, and every registered method is listed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.catalog.registry import REGISTRY
from tests.doc_sections import section as doc_section
from tests.shared_paths import spec_file

README = Path(__file__).resolve().parent.parent / "README.md"


def _table() -> dict[str, set[str]]:
    """section -> methods, from README's "## Methods" table."""
    text = README.read_text()
    block = doc_section(text, "## Methods")
    rows: dict[str, set[str]] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and "`" in cells[1]:
            rows[cells[0]] = set(re.findall(r"`(\w+)`", cells[1]))
    return rows


def test_every_registered_method_is_in_the_readme_and_nothing_else() -> None:
    listed = set().union(*_table().values())
    assert listed == set(REGISTRY.names())


def test_each_method_is_listed_under_its_spec_section() -> None:
    sections = {s["name"]: set(s["methods"]) for s in json.loads(spec_file().read_text())["sections"]}
    for section, methods in _table().items():
        assert section in sections, section
        assert methods <= sections[section], (section, methods - sections[section])
