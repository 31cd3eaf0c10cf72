"""Each check's figures: a JSON file under bench-results/battery/ (for docs/SECURITY.md to
quote) and a one-line summary printed at the end of the pytest run."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from tests.reliability.sizes import SIZES

__all__ = ["RESULTS_DIR", "SUMMARIES", "record"]

RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench-results" / "battery"
SUMMARIES: list[str] = []


def record(check: str, summary: str, figures: dict[str, Any]) -> Path:
    """Write `figures` to bench-results/battery/<check>.json (and <check>-<size>.json) and
    queue the summary line."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "check": check,
        "size": SIZES.name,
        "summary": summary,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "figures": figures,
    }
    text = json.dumps(doc, indent=2) + "\n"
    # the latest run, whatever its size, and the latest of this size (a CI run after a
    # soak leaves the soak's figures in <check>-soak.json)
    (RESULTS_DIR / f"{check}-{SIZES.name}.json").write_text(text)
    path = RESULTS_DIR / f"{check}.json"
    path.write_text(text)
    line = f"[{SIZES.name}] {check}: {summary}"
    SUMMARIES.append(line)
    print(line)
    return path
