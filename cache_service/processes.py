"""Stopping child processes: SIGTERM, a bounded wait, then SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import subprocess

__all__ = ["terminate"]


async def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Ask `proc` to exit cleanly; kill it if it has not within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
