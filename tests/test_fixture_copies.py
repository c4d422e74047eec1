"""The vendored copies of ../shared must not drift from the source."""

from __future__ import annotations

import pytest

from tests.shared_paths import BESIDE_REPO, FIXTURES

COPIED = ["spec/narayana-2.2.json", *sorted(
    str(p.relative_to(FIXTURES)) for p in (FIXTURES / "agi" / "transcripts").iterdir()
)]


@pytest.mark.skipif(not BESIDE_REPO.is_dir(), reason="../shared is not beside this clone")
@pytest.mark.parametrize("relative", COPIED)
def test_copy_matches_shared(relative: str) -> None:
    assert (FIXTURES / relative).read_bytes() == (BESIDE_REPO / relative).read_bytes()


def test_every_transcript_is_copied() -> None:
    if not BESIDE_REPO.is_dir():
        pytest.skip("../shared is not beside this clone")
    source = {p.name for p in (BESIDE_REPO / "agi" / "transcripts").iterdir()}
    copied = {p.name for p in (FIXTURES / "agi" / "transcripts").iterdir()}
    assert source == copied
