"""`make demo-mls` at a small size: a real run of the demo with real mls-rs clients and
three real node processes; it passes every check, exits 0 and leaves no node running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client_sdk.test_demo_interrupt import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_the_mls_demo_runs_every_check_and_stops_its_nodes() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEMO_GROUPS": "6"}
    done = subprocess.run(
        [sys.executable, "-m", "client_sdk.mlsrs.demo"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=230, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    base = lines[0].rsplit(" under ", 1)[1].strip()
    assert not [line for line in lines if line.strip().startswith("FAIL")]
    assert "checks passed: 7 of 7" in done.stdout
    assert "the laptop joined all 6 groups" in done.stdout
    assert "6 groups of " in done.stdout
    assert done.stderr == ""
    assert processes_mentioning(base) == []
    assert not Path(base).exists()
