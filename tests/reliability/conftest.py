"""Fixtures for the reliability battery: the SDK suite's real nodes and redis-servers (one
per node position, each test a fresh account), reused rather than rebuilt."""

from __future__ import annotations

import pytest

from tests.client_sdk.conftest import cluster, redis_servers
from tests.reliability.figures import SUMMARIES

__all__ = ["cluster", "redis_servers"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("reliability figures")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
