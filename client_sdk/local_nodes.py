"""Start and stop local cache nodes as child processes (demo, benchmarks, tests).

Each node is `python -m cache_service` with its own data directory and so its own
embedded redis-server, on a free loopback port. `extra_env` passes node settings, e.g.
`STATECACHE_TLS_CERT` / `STATECACHE_TLS_KEY`: the node's URL is then `https://...`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cache_service.processes import terminate

__all__ = ["LocalNode", "start_nodes", "stop_nodes"]


@dataclass
class LocalNode:
    index: int
    data_dir: Path
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def ready_file(self) -> Path:
        return self.data_dir / "ready"

    async def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        log = open(self.data_dir / "node.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(  # noqa: S603 - our own module, fixed argv
            [
                sys.executable, "-m", "cache_service",
                "--host", "127.0.0.1", "--port", str(self._port()),
                "--data-dir", str(self.data_dir), "--share-index", str(self.index),
                "--workers", str(self.workers), "--ready-file", str(self.ready_file),
                "--log-level", "warning",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env={**os.environ, **self.extra_env},
            # Its own session: a Ctrl-C on the terminal reaches the parent (the demo, a
            # benchmark), which stops its nodes in order, not each node at once.
            start_new_session=True,
        )  # fmt: skip
        log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.index} exited; see {self.data_dir}/node.log")
            if loop.time() > deadline:
                raise RuntimeError(f"node {self.index} did not start in {timeout} s")
            await asyncio.sleep(0.05)
        host, port, *scheme = self.ready_file.read_text().split()  # `https` with TLS
        self.url = f"{(scheme or ['http'])[0]}://{host}:{port}"

    def _port(self) -> int:
        # Restart on the same port so clients keep their configuration.
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    async def stop(self, timeout: float = 15.0) -> None:
        proc, self.process = self.process, None
        await terminate(proc, timeout)


async def start_nodes(
    base: Path, count: int, *, workers: int = 1, extra_env: dict[str, str] | None = None
) -> list[LocalNode]:
    nodes = [
        LocalNode(i, base / f"node{i}", workers=workers, extra_env=dict(extra_env or {}))
        for i in range(1, count + 1)
    ]
    try:
        await asyncio.gather(*(n.start() for n in nodes))
    except BaseException:
        await stop_nodes(nodes)
        raise
    return nodes


async def stop_nodes(nodes: list[LocalNode]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes))
