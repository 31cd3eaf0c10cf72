"""Fixtures for the reliability battery: the SDK suite's real nodes and redis-servers (one
per node position, each test a fresh account), reused rather than rebuilt."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client_sdk.local_nodes import LocalNode, start_nodes, stop_nodes
from tests.client_sdk.conftest import cluster, redis_servers
from tests.reliability.figures import SUMMARIES

__all__ = ["cluster", "node_processes", "redis_servers"]


@contextmanager
def node_processes(base: Path, count: int) -> Iterator[list[LocalNode]]:
    """`count` real node processes, each with its own embedded redis-server; none is left
    frozen (SIGSTOP) when they are stopped."""
    nodes = asyncio.run(start_nodes(base, count, workers=0))
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGCONT)
        asyncio.run(stop_nodes(nodes))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("reliability figures")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
