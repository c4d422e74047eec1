"""Issue 9, item 27: every figure is labelled by its date and its machine, never by who
measured it or when in the work. Checked on the files that carry figures: the README's
"How fast", docs/performance.md section by section, and every doc for the wording."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.doc_sections import section, sections

ROOT = Path(__file__).resolve().parents[1]
PERFORMANCE = ROOT / "docs" / "performance.md"
DOCS = sorted([ROOT / "README.md", ROOT / "dialplan" / "README.md", *(ROOT / "docs").glob("*.md")])
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
HOST = re.compile(r"\bhost ([A-Z])\b")
# Sections of docs/performance.md that describe the method or the machines, not a run.
NOT_A_RUN = ("What is measured", "Machines", "How to reproduce")
# Who measured, or when in the work: a figure's label is a date and a machine only.
WHO_OR_WHEN = re.compile(
    r"\b(?:this|previous|last|earlier|later|my|our) (?:work )?session\b|\bsession \d+\b|\bstop \d+\b"
    r"|\bhelper\b|\bmeasured by (?:me|us)\b|\b(?:I|we) (?:measured|ran|timed|benchmarked)\b",
    re.IGNORECASE,
)


def has_table(text: str) -> bool:
    return any(line.startswith("|") and re.search(r"\d", line) for line in text.splitlines())


def test_every_run_in_performance_md_carries_a_date_and_a_machine() -> None:
    runs = {h: body for h, body in sections(PERFORMANCE.read_text()).items() if not h.startswith(NOT_A_RUN)}
    measured = {h: body for h, body in runs.items() if has_table(body)}
    assert len(measured) >= 10  # the file's runs, not a parse that found nothing
    unlabelled = [h for h, body in measured.items() if not (DATE.search(body) and HOST.search(body))]
    assert unlabelled == []


def test_the_readme_how_fast_is_labelled() -> None:
    how_fast = section((ROOT / "README.md").read_text(), "## How fast")
    assert re.search(r"\d[\d,]* (?:pairs/s|pairs per second)|p99 of \d+ ms", how_fast)
    assert DATE.search(how_fast) and HOST.search(how_fast)


def test_every_machine_named_is_described_once() -> None:
    machines = sections(PERFORMANCE.read_text())["Machines"]
    described = re.findall(r"^\| host ([A-Z]) \|", machines, re.MULTILINE)
    assert len(described) == len(set(described))
    named = {m for doc in DOCS for m in HOST.findall(doc.read_text())}
    assert named and named <= set(described)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_label_says_who_measured_or_when_in_the_work(doc: Path) -> None:
    offending = [line.strip() for line in doc.read_text().splitlines() if WHO_OR_WHEN.search(line)]
    assert offending == []
