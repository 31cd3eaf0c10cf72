"""Ctrl-C in `make demo`: a real demo process, interrupted once its nodes run, prints one
line, `interrupted`, exits 130, and leaves no node process and no data directory behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_ctrl_c_in_the_demo_prints_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEMO_GROUPS": "40"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "client_sdk.demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert demo.stdout is not None and demo.stderr is not None
    try:
        first = demo.stdout.readline().decode()  # "starting 3 nodes (threshold 2) under DIR"
        assert first.startswith("starting"), first
        base = first.rsplit(" under ", 1)[1].strip()
        second = demo.stdout.readline().decode()  # the first check: the nodes are up
        assert second.strip(), second
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130
    assert err.decode() == "interrupted\n"
    assert b"Traceback" not in out
    assert not Path(base).exists()
    deadline = time.monotonic() + 10  # the nodes were stopped, not orphaned
    while processes_mentioning(base) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(base) == []
