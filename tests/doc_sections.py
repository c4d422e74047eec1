"""The `## ` sections of a Markdown document, for tests that read the README and docs as written."""

from __future__ import annotations


def sections(text: str, level: str = "## ") -> dict[str, str]:
    """Each `level` heading's title → its text: the heading line and everything up to the next
    heading of that level (its subsections included)."""
    found: dict[str, str] = {}
    title = ""
    for line in text.splitlines(keepends=True):
        if line.startswith(level):
            title = line[len(level) :].strip()
            found[title] = ""
        if title:
            found[title] += line
    return found


def section(text: str, heading: str) -> str:
    """One section by its heading line as written (`## Rate decks`)."""
    level, _, title = heading.partition(" ")
    return sections(text, level + " ")[title.strip()]
