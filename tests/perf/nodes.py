"""Local nodes for benchmarks, and their peak memory."""

from __future__ import annotations

from pathlib import Path

from client_sdk.local_nodes import LocalNode, start_nodes, stop_nodes

__all__ = ["peak_rss_mib", "start_bench_nodes", "stop_nodes"]


async def start_bench_nodes(
    base: Path, count: int = 3, *, appendfsync: str = "always", workers: int = 2
) -> list[LocalNode]:
    env = {
        "STATECACHE_APPENDFSYNC": appendfsync,
        "STATECACHE_RATE_LIMIT_PER_MINUTE": "1000000",
        # a benchmark registers many accounts from one address and may store a lot
        "STATECACHE_REGISTER_PER_HOUR": "1000000",
        "STATECACHE_QUOTA_GROUPS": "1000000",
        "STATECACHE_QUOTA_STORED_BYTES": str(1 << 40),
    }
    return await start_nodes(base, count, workers=workers, extra_env=env)


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            out.extend(int(c) for c in children.read_text().split())
    return out


def peak_rss_mib(nodes: list[LocalNode]) -> dict[str, float]:
    """Peak RSS (VmHWM) of the largest node process, and of its process tree: the node,
    its re-encryption workers and its redis-server."""
    node_peak = tree_peak = 0
    for node in nodes:
        if node.process is None:
            continue
        pid = node.process.pid
        own = _status_kib(pid, "VmHWM")
        tree = own + sum(_status_kib(c, "VmHWM") for c in _children(pid))
        node_peak, tree_peak = max(node_peak, own), max(tree_peak, tree)
    return {"node": node_peak / 1024, "node_with_workers_and_redis": tree_peak / 1024}
