"""`statecache serve --processes N`: N worker processes serving one port, and their parent.

One event loop holds one core at most (umbral-pre and request handling hold the GIL), so a
node on a bigger machine runs several, each a whole node process: its own event loop, Redis
client and re-encryption pool (`node_worker.py`). They share what makes them one node: the
port, the node key, the external Redis (required: the embedded redis-server belongs to one
process), and Prometheus's metrics.

The parent:
1. checks the TLS files, locks the data dir (unless `--node-key`: with an external Redis the
   node does not use it then) and reads or creates the node key, once, so every worker has
   the same key: one node id;
2. reserves the port: a socket bound with SO_REUSEPORT that never listens (so it takes no
   connections), once a plain bind showed that nothing else holds the port (two nodes never
   share one by accident); port 0 becomes one free port for all;
3. makes a private (0700) directory for prometheus_client's multiprocess files, removed at
   the end, and starts the workers, each in its own process group, listening on the port
   with SO_REUSEPORT: the kernel spreads connections across them;
4. once every worker listens, logs `listening` (with `processes`) and writes the ready file;
5. forwards SIGTERM or SIGINT to every worker as SIGTERM, and exits 0 once they all stopped.

A worker that exits unasked (killed, crashed, a failure while starting or serving) stops the
node: the other workers are stopped, quietly, and the node exits 1 with one line, the
worker's own reason or how it died. The parent does not restart it: whatever supervises the
node (systemd, Kubernetes, Compose) restarts the whole node, as it would a one-process node
that died. If the parent itself is killed, the workers see their stdin close and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from .failures import NodeFailure, one_line
from .metrics import MULTIPROC_DIR
from .serving import announce, load_tls
from .settings import Settings
from .startup import node_identity, warn_if_data_dir_was_open

__all__ = ["serve_processes"]

log = logging.getLogger("statecache.node")

_STOP_GRACE = 70.0  # seconds a worker may take to stop (aiohttp gives requests 60) until SIGKILL
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


async def serve_processes(settings: Settings, ready_file: Path | None) -> None:
    """Run `settings.processes` workers until SIGTERM or SIGINT; `NodeFailure` if the node
    cannot start or a worker dies (every worker is stopped first)."""
    tls = load_tls(settings)
    with contextlib.ExitStack() as stack:
        lock, node = node_identity(settings, stack, storage=False)
        port = _reserve_port(settings.host, settings.port, stack)
        metrics_dir = tempfile.mkdtemp(prefix="statecache-metrics-")  # 0700
        stack.callback(shutil.rmtree, metrics_dir, ignore_errors=True)
        config: dict[str, object] = {
            "node_key": node.to_bytes().hex(),
            "settings": settings.model_copy(update={"port": port}).model_dump(mode="json"),
        }

        def listening(host: str, port: int) -> None:
            announce(settings, tls, ready_file, host, port, processes=settings.processes)
            warn_if_data_dir_was_open(lock, settings)

        workers = _Workers(settings.processes, metrics_dir)
        await workers.run(config, listening)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    said: str = ""  # its `failed ...` line
    address: tuple[str, int] | None = None
    exited: bool = False
    unread: bytes = b""

    def describe(self, count: int) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        return f"worker process {self.index} of {count} (pid {self.proc.pid}) {how}"


class _Workers:
    """Starts the workers, reads what they report, stops them and sees them go."""

    def __init__(self, count: int, metrics_dir: str) -> None:
        self._count = count
        self._metrics_dir = metrics_dir
        self._env = {
            **os.environ,
            MULTIPROC_DIR: metrics_dir,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])
            ),
        }
        self._events: asyncio.Queue[tuple[str, _Worker | None]] = asyncio.Queue()
        self._workers: list[_Worker] = []
        self._failure: str | None = None
        self._stopping = False
        self._deadline: float | None = None

    async def run(self, config: dict[str, object], listening: Callable[[str, int], None]) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)  # before any child can exit
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._events.put_nowait, ("signal", None))
        try:
            for index in range(1, self._count + 1):
                self._workers.append(self._start(loop, index, config))
            await self._supervise(loop, listening)
        finally:
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for worker in self._workers:  # only after a failure of the parent itself
                if not worker.exited:
                    _kill_group(worker.proc.pid)
                    worker.proc.wait()
                    self._gone(loop, worker)
        if self._failure is not None:
            raise NodeFailure(self._failure)

    def _start(
        self, loop: asyncio.AbstractEventLoop, index: int, config: dict[str, object]
    ) -> _Worker:
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, our module
                [sys.executable, "-m", "cache_service.node_worker", str(index)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env,
                process_group=0,  # a terminal's Ctrl-C reaches the parent alone
            )  # fmt: skip
        except OSError as exc:
            raise NodeFailure(f"cannot start worker process {index}: {one_line(exc)}") from None
        assert proc.stdin is not None and proc.stdout is not None
        worker = _Worker(index, proc)
        os.set_blocking(proc.stdout.fileno(), False)
        loop.add_reader(proc.stdout.fileno(), self._read, loop, worker)
        with contextlib.suppress(OSError):  # it died at once: reaped like any other exit
            proc.stdin.write(json.dumps({**config, "index": index}).encode() + b"\n")
            proc.stdin.flush()
        return worker

    async def _supervise(
        self, loop: asyncio.AbstractEventLoop, listening: Callable[[str, int], None]
    ) -> None:
        ready = 0
        left = len(self._workers)
        while left:
            timeout = None if self._deadline is None else max(0.0, self._deadline - loop.time())
            try:
                kind, worker = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                self._fail(f"worker processes did not stop within {_STOP_GRACE:g} s: killed")
                self._deadline = None
                for each in self._workers:
                    if not each.exited:
                        _kill_group(each.proc.pid)
                continue
            if kind == "signal" and not self._stopping:
                log.info("stopping", extra={"processes": len(self._workers)})
                self._stop(quiet=False)
            elif kind == "listening" and worker is not None and worker.address is not None:
                ready += 1
                if ready == len(self._workers) and not self._stopping:
                    try:
                        listening(*worker.address)
                    except NodeFailure as exc:
                        self._fail(str(exc))
            elif kind == "exited" and worker is not None:
                left -= 1
                if worker.said:
                    self._fail(worker.said)
                elif not self._stopping or worker.proc.returncode not in (0, -signal.SIGTERM):
                    self._fail(worker.describe(self._count))

    def _fail(self, reason: str) -> None:
        """The first reason is the node's; stop the other workers without a word."""
        if self._failure is None:
            self._failure = reason
        if not self._stopping:
            self._stop(quiet=True)

    def _stop(self, *, quiet: bool) -> None:
        self._stopping = True
        self._deadline = asyncio.get_running_loop().time() + _STOP_GRACE
        for worker in self._workers:
            if worker.exited:
                continue
            if quiet:  # `quiet`, then end of file: it stops as on SIGTERM, logging nothing
                assert worker.proc.stdin is not None
                with contextlib.suppress(OSError):
                    worker.proc.stdin.write(b"quiet\n")
                    worker.proc.stdin.close()
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.proc.pid, signal.SIGTERM)

    def _read(self, loop: asyncio.AbstractEventLoop, worker: _Worker) -> None:
        """Reports: `listening HOST PORT`, `failed MESSAGE`."""
        assert worker.proc.stdout is not None
        fd = worker.proc.stdout.fileno()
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
            return
        *lines, worker.unread = (worker.unread + chunk).split(b"\n")
        for raw in lines:
            kind, _, rest = raw.decode(errors="replace").partition(" ")
            if kind == "listening":
                host, _, port = rest.rpartition(" ")
                worker.address = (host, int(port))
                self._events.put_nowait(("listening", worker))
            elif kind == "failed":
                worker.said = rest

    def _reap(self) -> None:
        """SIGCHLD: for each worker that exited, kill what is left of its process group
        (the pool's processes of a killed worker) while its pid cannot be reused yet, then
        reap it."""
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            if worker.exited:
                continue
            try:
                info = os.waitid(os.P_PID, worker.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None or info.si_pid == 0:
                continue
            _kill_group(worker.proc.pid)
            worker.proc.wait()
            self._gone(loop, worker)
            self._events.put_nowait(("exited", worker))

    def _gone(self, loop: asyncio.AbstractEventLoop, worker: _Worker) -> None:
        worker.exited = True
        assert worker.proc.stdout is not None and worker.proc.stdin is not None
        self._read(loop, worker)  # its last words, `failed ...`, written before it exited
        loop.remove_reader(worker.proc.stdout.fileno())
        worker.proc.stdout.close()
        with contextlib.suppress(OSError):
            worker.proc.stdin.close()
        mark_process_dead(worker.proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _reserve_port(host: str, port: int, stack: contextlib.ExitStack) -> int:
    """Hold `port` (0: a free one) on every address of `host` for the workers; the port."""
    wanted = port
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, address in dict.fromkeys((info[0], info[4][0]) for info in infos):
            with _socket(family, share=False) as probe:  # fails if anything holds the port
                probe.bind((address, port))
                port = probe.getsockname()[1]
            held = _socket(family, share=True)
            stack.callback(held.close)
            held.bind((address, port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else one_line(exc)
        raise NodeFailure(f"cannot listen on {host} port {wanted}: {reason}") from None
    return port


def _socket(family: int, *, share: bool) -> socket.socket:
    """A TCP socket set up as asyncio sets up a listening one (and SO_REUSEPORT if `share`)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock
