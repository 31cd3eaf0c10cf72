"""Fixtures for the mls-rs store tests: the SDK suite's real nodes and redis-servers (one
per node position, each test a fresh account), reused rather than rebuilt."""

from __future__ import annotations

from tests.client_sdk.conftest import cluster, redis_servers

__all__ = ["cluster", "redis_servers"]
