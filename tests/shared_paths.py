"""Where the tests find the spec and the Asterisk transcripts: the copies in
tests/fixtures/shared (always there), which test_fixture_copies keeps equal to
../shared when that directory is present."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "shared"
BESIDE_REPO = Path(__file__).resolve().parents[2] / "shared"


def spec_file() -> Path:
    return FIXTURES / "spec" / "narayana-2.2.json"


def transcripts_dir() -> Path:
    return FIXTURES / "agi" / "transcripts"
