"""Fixtures shared by the whole suite: the real reference data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real ISIC 2019 tables and a 211-image sample); skips where absent."""
    if not (SHARED_DATA / "isic2019").is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (a clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def isic_sample(shared_data: Path) -> Path:
    """The 211 real ISIC 2019 training images in the challenge layout."""
    return shared_data / "isic2019" / "sample"
