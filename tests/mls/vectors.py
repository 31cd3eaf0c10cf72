"""The MLS working group's test vectors, read from the shared checkout next to the repo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTOR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "mls-test-vectors"


def load(name: str) -> list[dict[str, Any]]:
    """One vector file; fails the run (not skips) when the shared directory is missing."""
    path = VECTOR_DIR / name
    if not path.is_file():
        pytest.fail(
            f"MLS test vector {name} not found at {path}: the shared mls-test-vectors "
            "directory (mlswg/mls-implementations test-vectors/) must sit at "
            "../shared/mls-test-vectors relative to the repository root",
            pytrace=False,
        )
    cases: list[dict[str, Any]] = json.loads(path.read_text())
    return cases
