"""Settings every test run shares.

Tests register many accounts from 127.0.0.1, so node processes they start (which read
`STATECACHE_*` variables) allow that many registrations per address; a test of the
registration limit sets its own. In-process nodes get the same from their fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.redis_cluster import RedisClusterProcesses

TEST_REGISTER_PER_HOUR = 1_000_000
os.environ.setdefault("STATECACHE_REGISTER_PER_HOUR", str(TEST_REGISTER_PER_HOUR))


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A real 3-master, 3-replica Redis Cluster for the session (started on first use)."""
    with RedisClusterProcesses(appendfsync="everysec") as cluster:
        yield cluster
