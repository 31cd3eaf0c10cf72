"""Fixtures and the figure report of the security battery.

In-process nodes (`start_node`, `node`) are those of tests/cache_service: one session
redis-server, real HTTP on 127.0.0.1, a clock the test moves. `spawn_node` starts a real
`python -m cache_service` subprocess with its own embedded Redis (as `statecache serve`
runs), so its memory can be read from /proc and its server settings are the real ones.

At the end of the session every check's figures go to bench-results/battery/<check>.json,
and one summary line per check is printed (no `-s` needed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.cache_service.conftest import (  # noqa: F401 - fixtures, shared
    clock,
    node,
    redis_server,
    session,
    start_node,
)
from tests.security.battery import FIGURES, RESULTS_DIR
from tests.security.nodes import RemoteNode, SpawnNode, spawn_remote_node


@pytest.fixture
async def spawn_node() -> AsyncIterator[SpawnNode]:
    """Start `python -m cache_service` subprocesses (settings as STATECACHE_* variables)."""
    started: list[RemoteNode] = []
    http = aiohttp.ClientSession()

    async def start(**env: str) -> RemoteNode:
        remote = await spawn_remote_node(http, env)
        started.append(remote)
        return remote

    try:
        yield start
    finally:
        for remote in started:
            await remote.stop()
        await http.close()


def pytest_sessionfinish() -> None:
    if FIGURES.checks():
        FIGURES.write(RESULTS_DIR)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    checks = FIGURES.checks()
    if not checks:
        return
    terminalreporter.section("security battery")
    for check in checks:
        terminalreporter.write_line(FIGURES.summary(check))
    terminalreporter.write_line(f"figures written to {RESULTS_DIR}/")
