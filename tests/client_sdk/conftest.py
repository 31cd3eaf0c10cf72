"""Fixtures for the device SDK tests: real nodes, real Redis, real Umbral.

Each test gets three in-process nodes (`create_app`, served on 127.0.0.1 by an aiohttp
`AppRunner`), node i over its own redis-server (one per node position, started once for
the session; every test makes a fresh account, so nothing is shared). Nodes and devices
read time from one `Clock`, which a test moves to expire grants without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from cache_service.app import create_app
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.settings import Settings
from cache_service.storage import RedisStorage
from client_sdk.device import SnapshotInput, Statecache, create_account, enrollment_request
from client_sdk.fanout import RetryPolicy
from client_sdk.keystore import Profile
from client_sdk.verify import OpenedSnapshot
from tests.client_sdk.malicious_proxy import MaliciousProxy
from tests.conftest import TEST_REGISTER_PER_HOUR

NODES, THRESHOLD = 3, 2
# Small, so a dead or hanging node costs the suite little time.
POLICY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, timeout=2.0)


class Clock:
    """Wall-clock time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Node:
    """One in-process node; `stop` and `start` again keep its port, identity and data."""

    index: int
    data_dir: Path
    storage: RedisStorage
    clock: Clock
    port: int = 0
    runner: web.AppRunner | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # overrides, e.g. quotas

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        settings = Settings(
            data_dir=self.data_dir,
            share_index=self.index,
            workers=0,
            register_per_hour=TEST_REGISTER_PER_HOUR,
            **self.settings,
        )
        app = create_app(settings, clock=self.clock, storage=self.storage)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        self.runner = runner

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()


@dataclass
class Cluster:
    nodes: list[Node]
    clock: Clock
    proxies: list[MaliciousProxy] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    async def proxy(self, index: int = 0) -> MaliciousProxy:
        """A malicious proxy in front of node `index` (0-based); it stays at that position
        in the node list, since node i holds share i."""
        proxy = MaliciousProxy(self.nodes[index].url)
        await proxy.start()
        self.proxies.append(proxy)
        return proxy

    def statecache(self, profile: Profile, **kw: object) -> Statecache:
        """A device on this cluster; `policy` defaults to the quick test POLICY."""
        kw = {"policy": POLICY, **kw}
        return Statecache(profile, clock=self.clock, **kw)  # type: ignore[arg-type]

    async def account(self, urls: Sequence[str] | None = None) -> Profile:
        return await create_account(
            list(urls or self.urls), THRESHOLD, clock=self.clock, policy=POLICY
        )

    async def enrol(self, admin: Statecache, name: str = "laptop", **kw: object) -> Profile:
        """A new device, approved by `admin` (same node list)."""
        device, blob = enrollment_request(
            name,
            account_id=admin.profile.account_id,
            nodes=admin.profile.nodes,
            threshold=admin.profile.threshold,
        )
        await admin.approve(blob, **kw)  # type: ignore[arg-type]
        return Profile(admin.profile.account_id, device, list(admin.profile.nodes), THRESHOLD)


def short_tempdir(prefix: str) -> Path:
    """Under /tmp: a unix socket path must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[list[EmbeddedRedis]]:
    """One real redis-server per node position, for the whole session."""
    base = short_tempdir("sc-sdk-")
    servers = [EmbeddedRedis(base / f"r{i}", appendfsync="everysec") for i in range(NODES)]

    async def start() -> None:
        await asyncio.gather(*(s.start() for s in servers))

    asyncio.run(start())
    try:
        yield servers
    finally:

        async def stop() -> None:
            await asyncio.gather(*(s.stop() for s in servers))

        asyncio.run(stop())
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def cluster(redis_servers: list[EmbeddedRedis], tmp_path: Path) -> AsyncIterator[Cluster]:
    clock = Clock()
    nodes = [
        Node(
            index=i + 1,
            data_dir=tmp_path / f"node{i + 1}",
            storage=RedisStorage(aioredis.Redis(unix_socket_path=server.socket)),
            clock=clock,
        )
        for i, server in enumerate(redis_servers)
    ]
    await asyncio.gather(*(n.start() for n in nodes))
    c = Cluster(nodes, clock)
    try:
        yield c
    finally:
        for proxy in c.proxies:
            await proxy.close()
        for node in nodes:
            await node.stop()
            await node.storage.close()


# synthetic MLS state


def groups(count: int, *, epoch: int = 5, tag: str = "g") -> list[SnapshotInput]:
    """`count` groups, each with a group_state and a ratchet_tree snapshot."""
    items = []
    for g in range(count):
        group_id = hashlib.sha256(f"{tag}{g}".encode()).digest()[:16]
        items.append(SnapshotInput(group_id, "group_state", epoch, os.urandom(200 + g)))
        items.append(SnapshotInput(group_id, "ratchet_tree", epoch, os.urandom(100 + g)))
    return items


def bump(items: Sequence[SnapshotInput], by: int = 1) -> list[SnapshotInput]:
    """The next MLS epoch of these groups, with fresh state."""
    return [
        SnapshotInput(i.group_id, i.kind, i.mls_epoch + by, os.urandom(len(i.plaintext) + 1))
        for i in items
    ]


Latest = dict[tuple[bytes, str], tuple[int, bytes]]


def latest(*batches: Sequence[SnapshotInput]) -> Latest:
    """(group, kind) -> (newest MLS epoch, its plaintext), over everything published."""
    out: Latest = {}
    for batch in batches:
        for i in batch:
            key = (i.group_id, i.kind)
            if key not in out or i.mls_epoch >= out[key][0]:
                out[key] = (i.mls_epoch, i.plaintext)
    return out


def as_latest(snaps: Sequence[OpenedSnapshot]) -> Latest:
    out: Latest = {}
    for s in snaps:
        key = (s.group_id, s.kind)
        if key not in out or s.mls_epoch >= out[key][0]:
            out[key] = (s.mls_epoch, s.plaintext)
    return out


def assert_all_genuine(snaps: Sequence[OpenedSnapshot], *batches: Sequence[SnapshotInput]) -> None:
    """Every snapshot the SDK yielded is one that was published, byte for byte."""
    published = {(i.group_id, i.kind, i.mls_epoch): i.plaintext for batch in batches for i in batch}
    for s in snaps:
        assert published.get((s.group_id, s.kind, s.mls_epoch)) == s.plaintext


async def collect(aiter: AsyncIterator[OpenedSnapshot]) -> list[OpenedSnapshot]:
    return [s async for s in aiter]
