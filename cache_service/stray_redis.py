"""A redis-server left running on a data dir by a node that is gone (killed with SIGKILL,
or stopped while it was still starting), found by the pid file the node writes and stopped
before a new one starts: two redis-servers must never write one AOF.

The node holds the data dir's lock whenever it calls this, so a live redis-server whose pid
is in `DIR/redis.pid` and whose command line names this data dir's socket cannot belong to
a running node: it is an orphan, whether it answers, is still loading its data, or is
stopped (SIGSTOP). It gets SIGCONT, SIGTERM (Redis flushes its AOF and exits, or exits at
once while loading), a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from .failures import NodeFailure

__all__ = ["PID_FILE", "stop_orphan", "write_pid_file"]

log = logging.getLogger("statecache.redis")

PID_FILE = "redis.pid"
_TERM_WAIT = 10.0  # seconds an orphan gets to flush and exit after SIGTERM
_KILL_WAIT = 5.0
_POLL = 0.05


def write_pid_file(path: Path, pid: int) -> None:
    """Record the node's redis-server child (0600, never through a symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)


def _recorded_pid(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        first = os.read(fd, 32).split(b"\n", 1)[0].strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(first) if first.isdigit() and int(first) > 1 else None


def _serves(pid: int, socket: str) -> bool:
    """Is `pid` a live (not zombie) redis-server whose command line names `socket`?

    redis-server rewrites its title to `.../redis-server unixsocket:SOCKET`; before it
    does, its arguments hold `--unixsocket SOCKET`."""
    proc = Path("/proc") / str(pid)
    try:
        cmdline = (proc / "cmdline").read_bytes()
        status = (proc / "status").read_text()
    except OSError:
        return False
    if "\nState:\tZ" in status:
        return False
    words = cmdline.replace(b"\0", b" ").decode(errors="replace").split()
    if not words or "redis-server" not in os.path.basename(words[0]):
        return False
    return any(word == socket or word.endswith(":" + socket) for word in words[1:])


async def stop_orphan(data_dir: Path, socket: str) -> bool:
    """Stop the redis-server recorded in `data_dir`'s pid file if it still serves `socket`.
    True if there was one. Raises NodeFailure if it cannot be stopped."""
    pid = _recorded_pid(data_dir / PID_FILE)
    if pid is None or not _serves(pid, socket):
        return False
    log.warning(
        "shutting down a redis-server left running on this data dir",
        extra={"pid": pid, "data_dir": str(data_dir)},
    )
    for sig, wait in ((signal.SIGTERM, _TERM_WAIT), (signal.SIGKILL, _KILL_WAIT)):
        try:
            os.kill(pid, signal.SIGCONT)  # a stopped process acts on nothing else
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            raise NodeFailure(
                f"a redis-server left on {data_dir} (pid {pid}) is not this user's to stop"
            ) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while _serves(pid, socket):
            if loop.time() > deadline:
                break
            await asyncio.sleep(_POLL)
        else:
            return True
    raise NodeFailure(f"a redis-server left running on {data_dir} (pid {pid}) does not stop")
