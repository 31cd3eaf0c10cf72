"""The device SDK's fixtures (three in-process nodes over real redis-servers) for the
mls-rs tests."""

from tests.client_sdk.conftest import cluster, redis_servers

__all__ = ["cluster", "redis_servers"]
