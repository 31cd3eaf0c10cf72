"""Sizes and figures of the security battery (tests/security, and the decoder fuzzing of
tests/pre it builds on).

`SOAK=1` selects the full size (`make soak`); anything else is the CI size that `make test`
runs. This module is the only place that reads the variable.

Each check adds to its figures here (`FIGURES.add`, `FIGURES.maximum`, `FIGURES.note`) and
states its goals (`FIGURES.goal`). At the end of the session tests/security/conftest.py
writes one JSON file per check that recorded anything, to bench-results/battery/<check>.json
(the latest run of any size) and <check>-<size>.json (the latest of that size), as
tests/reliability does, and prints a one-line summary per check.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench-results" / "battery"

SOAK = os.environ.get("SOAK", "").strip() not in ("", "0")


@dataclass(frozen=True)
class Size:
    name: str
    api_examples: int  # schemathesis cases per (operation, generation mode, caller)
    pre_decoder_examples: int  # hypothesis examples per test of tests/pre's decoder fuzzing
    decoder_examples: int  # per record type and input family added here
    model_examples: int  # per wire model and input family
    atheris_runs: int  # libFuzzer executions (-runs)
    atheris_seconds: int  # and a cap on its time (-max_total_time)
    enumeration_probes: int  # requests per side when comparing existing/absent accounts
    slowloris_connections: int  # concurrent connections trickling a request head
    big_body_concurrency: int  # concurrent maximum-size (16 MiB) bodies
    inflight_body_mib: int  # the node's budget of request-body bytes held at once
    flood_requests: int  # requests one device sends as fast as it can
    flood_rate_limit: int  # the node's per-device limit (per minute) during the flood
    idle_timeout: float  # node idle / request-head timeout during the resource checks
    body_timeout: float  # node body timeout during the resource checks
    test_timeout: int  # pytest-timeout for the longest battery tests


CI = Size(
    name="ci",
    api_examples=12,
    pre_decoder_examples=200,
    decoder_examples=25,
    model_examples=25,
    atheris_runs=100_000,
    atheris_seconds=15,
    enumeration_probes=30,
    slowloris_connections=50,
    big_body_concurrency=8,
    inflight_body_mib=64,
    flood_requests=300,
    flood_rate_limit=200,
    idle_timeout=1.5,
    body_timeout=1.5,
    test_timeout=300,
)

FULL = Size(
    name="soak",
    api_examples=300,
    pre_decoder_examples=2_000,
    decoder_examples=800,
    model_examples=800,
    atheris_runs=10_000_000,
    atheris_seconds=180,
    enumeration_probes=400,
    slowloris_connections=500,
    big_body_concurrency=32,
    inflight_body_mib=256,  # the default
    flood_requests=15_000,  # > 2 x the limit: a flood that straddles a minute still sees 429s
    flood_rate_limit=6_000,  # the default
    idle_timeout=5.0,
    body_timeout=5.0,
    test_timeout=3_600,
)

SIZE = FULL if SOAK else CI


class Figures:
    """Per-check figures: counters that add up, maxima, short notes, and goals."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._goals: dict[str, dict[str, tuple[str, float]]] = {}
        self._notes: dict[str, list[str]] = {}
        self._recorded: set[str] = set()  # checks that measured something (not just goals)

    def _check(self, check: str) -> dict[str, Any]:
        self._recorded.add(check)
        return self._values.setdefault(check, {})

    def add(self, check: str, key: str, n: float = 1) -> None:
        values = self._check(check)
        values[key] = values.get(key, 0) + n

    def maximum(self, check: str, key: str, value: float) -> None:
        values = self._check(check)
        values[key] = max(values.get(key, value), value)

    def set(self, check: str, key: str, value: Any) -> None:
        self._check(check)[key] = value

    def note(self, check: str, text: str, limit: int = 20) -> None:
        self._recorded.add(check)
        notes = self._notes.setdefault(check, [])
        if len(notes) < limit and text not in notes:
            notes.append(text[:500])

    def goal(self, check: str, key: str, relation: str, bound: float) -> None:
        """`relation` is "==" or "<=": the figure `key` should be `relation` `bound`."""
        self._goals.setdefault(check, {})[key] = (relation, bound)
        self._values.setdefault(check, {}).setdefault(key, 0)

    def get(self, check: str, key: str) -> Any:
        return self._values.get(check, {}).get(key)

    def checks(self) -> list[str]:
        return sorted(self._recorded)

    def met(self, check: str) -> bool:
        values = self._values.get(check, {})
        for key, (relation, bound) in self._goals.get(check, {}).items():
            value = values.get(key, 0)
            if (relation == "==" and value != bound) or (relation == "<=" and value > bound):
                return False
        return True

    def report(self, check: str) -> dict[str, Any]:
        return {
            "check": check,
            "size": SIZE.name,
            "sizes": asdict(SIZE),
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
            "figures": dict(sorted(self._values.get(check, {}).items())),
            "goals": {k: f"{r} {b:g}" for k, (r, b) in self._goals.get(check, {}).items()},
            "goals_met": self.met(check),
            "notes": self._notes.get(check, []),
        }

    def summary(self, check: str) -> str:
        values = self._values.get(check, {})
        goals = self._goals.get(check, {})
        parts = []
        for key, value in sorted(values.items()):
            text = f"{key}={_short(value)}"
            if key in goals:
                relation, bound = goals[key]
                text += f" (goal {relation} {bound:g})"
            parts.append(text)
        verdict = "goals met" if self.met(check) else "GOALS MISSED"
        return f"battery {check} [{SIZE.name}] {verdict}: " + ", ".join(parts)

    def write(self, directory: Path = RESULTS_DIR) -> list[Path]:
        written = []
        for check in self.checks():
            text = json.dumps(self.report(check), indent=2) + "\n"
            for path in (directory / f"{check}.json", directory / f"{check}-{SIZE.name}.json"):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(path)
                written.append(path)
        return written


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


FIGURES = Figures()
