"""The MLS working group's test vectors, vendored in `tests/mls/vectors/` (source
repository and commit in its README.md): the tests read nothing outside the repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    """One vector file, as the working group publishes it."""
    cases: list[dict[str, Any]] = json.loads((VECTOR_DIR / name).read_text())
    return cases
