"""Fixtures for the cache node tests.

Real components only: one redis-server for the whole session (every test makes fresh
random accounts, so nothing is flushed), real HTTP on 127.0.0.1, real Umbral through
`pre`. Time comes from a `Clock` the test moves by hand; the same clock object is given to
the node and to its clients, so moving it keeps requests inside the skew window.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

import pre
from cache_service.api.keys import SERVICES
from cache_service.app import create_app
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.protocol.httpsig import sign_request_headers
from cache_service.settings import Settings
from cache_service.storage import RedisStorage
from client_sdk.errors import NodeError
from client_sdk.node_client import NodeClient
from tests.conftest import TEST_REGISTER_PER_HOUR

PROBLEM_JSON = "application/problem+json"
HOUR = 3600


class Clock:
    """A callable clock with a mutable `now` (seconds)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(time.time()) if now is None else now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def short_tempdir(prefix: str) -> Path:
    """A directory under /tmp: a unix socket path must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# accounts and devices


@dataclass(frozen=True)
class Device:
    secrets: pre.DeviceSecrets
    cert: pre.DeviceCertificate

    @property
    def id_hex(self) -> str:
        return self.secrets.device_id.hex()


@dataclass(frozen=True)
class Account:
    secrets: pre.AccountSecrets
    record: pre.AccountRecord
    admin: Device

    @property
    def account_id(self) -> bytes:
        return self.secrets.account_id

    @property
    def id_hex(self) -> str:
        return self.account_id.hex()

    def device(self, now: float, role: pre.Role = pre.Role.MEMBER, name: str = "") -> Device:
        device = pre.DeviceSecrets.generate()
        cert = pre.certify_device(
            self.secrets,
            device.public_keys,
            role=role,
            not_before=int(now) - 60,
            not_after=int(now) + 24 * HOUR,
            name=name,
        )
        return Device(device, cert)


def new_account(now: float) -> Account:
    secrets_ = pre.AccountSecrets.generate()
    record = pre.register_account(secrets_, now=int(now))
    admin = pre.DeviceSecrets.generate()
    cert = pre.certify_device(
        secrets_,
        admin.public_keys,
        role=pre.Role.ADMIN,
        not_before=int(now) - 60,
        not_after=int(now) + 24 * HOUR,
        name="admin",
    )
    return Account(secrets_, record, Device(admin, cert))


def seal(
    kek: pre.Kek,
    author: Device,
    *,
    group: bytes = b"group-1",
    kind: str = "group_state",
    epoch: int = 1,
    plaintext: bytes | None = None,
    now: float,
) -> pre.SealedSnapshot:
    return pre.seal_snapshot(
        kek,
        author.secrets,
        group_id=group,
        kind=kind,
        mls_epoch=epoch,
        plaintext=plaintext if plaintext is not None else secrets.token_bytes(64),
        now=int(now),
    )


# raw HTTP, for what NodeClient hides (status codes, headers, replay, tampering)


@dataclass(frozen=True)
class RawResponse:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def signed_headers(
    device: pre.DeviceSecrets,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    created: float,
    node_id: str,
    nonce: str | None = None,
) -> dict[str, str]:
    """Signature fields (profile 2) for a request to the node `node_id` (hex, as
    `GET /v1/node` shows it; `Node.node_id` for an in-process node)."""
    return sign_request_headers(
        method=method,
        path=path,
        query=query,
        content_digest=pre.content_digest(body),
        keyid=device.device_id.hex(),
        created=int(created),
        nonce=nonce or secrets.token_urlsafe(18),
        node_id=node_id,
        sign=device.sign_request,
    )


def as_body(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode()


def assert_problem(resp: RawResponse, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 answer with `status` and the machine `code`."""
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.content_type == PROBLEM_JSON, resp.content_type
    problem: dict[str, Any] = resp.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert problem["type"] and problem["title"]
    return problem


async def expect_error(aw: Awaitable[object], status: int, code: str) -> NodeError:
    """`aw` (a NodeClient call) fails with `status` and problem `code`."""
    with pytest.raises(NodeError) as info:
        await aw
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


# nodes


@dataclass
class Node:
    url: str
    app: web.Application
    server: TestServer
    storage: RedisStorage
    settings: Settings
    clock: Clock
    session: aiohttp.ClientSession
    stopped: bool = field(default=False)

    @property
    def node_id(self) -> str:
        """This node's id (hex): what its requests are signed for (`GET /v1/node` shows it)."""
        return self.app[SERVICES].node.node_id.hex()

    def client(self, account: Account | None = None, device: Device | None = None) -> NodeClient:
        return NodeClient(
            self.session,
            self.url,
            account_id=None if account is None else account.account_id,
            device=None if device is None else device.secrets,
            clock=self.clock,
        )

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: Any = b"",
        content_type: str | None = "application/json",
        device: Device | None = None,
        created: float | None = None,
        nonce: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        """One request; signed as `device` for this node when given (over exactly these
        bytes)."""
        data = as_body(body)
        all_headers: dict[str, str] = {}
        if content_type is not None and data:
            all_headers["Content-Type"] = content_type
        if device is not None:
            all_headers.update(
                signed_headers(
                    device.secrets,
                    method,
                    path,
                    query=query,
                    body=data,
                    created=self.clock() if created is None else created,
                    node_id=self.node_id,
                    nonce=nonce,
                )
            )
        all_headers.update(headers or {})
        url = self.url + path + ("?" + query if query else "")
        return await send_raw(self.session, method, url, data, all_headers)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.server.close()
            await self.storage.close()


async def send_raw(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes,
    headers: dict[str, str],
) -> RawResponse:
    async with session.request(
        method, url, data=data or None, headers=headers, skip_auto_headers={"Content-Type"}
    ) as resp:
        return RawResponse(resp.status, resp.content_type, dict(resp.headers), await resp.read())


class StartNode(Protocol):
    def __call__(
        self,
        *,
        clock: Clock | None = None,
        socket: str | None = None,
        db: int = 0,
        data_dir: Path | None = None,
        **settings: Any,
    ) -> Awaitable[Node]: ...


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One real redis-server for the session (durability is tested on its own servers)."""
    directory = short_tempdir("sc-redis-")
    server = EmbeddedRedis(directory, appendfsync="everysec")
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())
        shutil.rmtree(directory, ignore_errors=True)


OwnRedis = Callable[..., Awaitable[EmbeddedRedis]]


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    """Start a redis-server of the test's own, which it may stop, kill and restart."""
    servers: list[EmbeddedRedis] = []

    async def start(appendfsync: str = "always") -> EmbeddedRedis:
        server = EmbeddedRedis(short_tempdir("sc-own-"), appendfsync=appendfsync)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def start_node(
    redis_server: EmbeddedRedis,
    session: aiohttp.ClientSession,
    clock: Clock,
    tmp_path: Path,
) -> AsyncIterator[StartNode]:
    """Start a node on 127.0.0.1 over the session Redis (or `socket`); stopped at the end.

    Each node gets its own data directory (its identity) unless `data_dir` is given. Nodes
    of one deployment each have their own Redis: give them distinct `db` numbers."""
    started: list[Node] = []

    async def start(
        *,
        clock: Clock | None = clock,
        socket: str | None = None,
        db: int = 0,
        data_dir: Path | None = None,
        **overrides: Any,
    ) -> Node:
        node_clock = clock if clock is not None else Clock()
        if data_dir is None:
            data_dir = tmp_path / f"node{len(started)}"
        settings = Settings(
            data_dir=data_dir,
            **{"workers": 0, "register_per_hour": TEST_REGISTER_PER_HOUR, **overrides},
        )
        storage = RedisStorage(
            aioredis.Redis(unix_socket_path=socket or redis_server.socket, db=db)
        )
        app = create_app(settings, clock=node_clock, storage=storage)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        node = Node(url, app, server, storage, settings, node_clock, session)
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        await node.stop()


@pytest.fixture
async def node(start_node: StartNode) -> Node:
    return await start_node()


# one account set up on a node


@dataclass
class Tenant:
    """A registered account with a member device and the `account` label at key epoch 0."""

    node: Node
    account: Account
    member: Device
    capsule: pre.KeyCapsule
    kek: pre.Kek
    admin_client: NodeClient
    member_client: NodeClient

    @property
    def now(self) -> float:
        return self.node.clock()

    def seal(self, author: Device | None = None, **kw: Any) -> pre.SealedSnapshot:
        return seal(self.kek, author or self.account.admin, now=self.now, **kw)

    def grant(
        self,
        capsule: pre.KeyCapsule | None = None,
        device: Device | None = None,
        *,
        threshold: int = 1,
        shares: int = 1,
        ttl: int = HOUR,
    ) -> tuple[pre.GrantShare, ...]:
        return pre.make_grant(
            self.account.secrets,
            capsule or self.capsule,
            (device or self.member).cert,
            threshold=threshold,
            shares=shares,
            expires_at=int(self.now) + ttl,
        )

    def manifest(
        self,
        node_key: bytes,
        *,
        base: pre.AccountManifest | None = None,
        devices: tuple[Device, ...] = (),
    ) -> pre.AccountManifest:
        """A signed manifest of this account on one node (threshold 1): version 1 naming
        the `account` label, or the version after `base` also naming `devices`."""
        entries = {
            d.secrets.device_id: pre.ManifestDevice(
                device_id=d.secrets.device_id,
                certificate_hash=pre.certificate_hash(d.cert),
                revoked_at=0,
            )
            for d in (self.account.admin, self.member, *devices)
        }
        unsigned = pre.AccountManifest(
            account_id=self.account.record.account_id,
            version=1 if base is None else base.version + 1,
            previous=bytes(32) if base is None else base.digest,
            issued_at=int(self.now),
            threshold=1,
            grant_generation=0,
            nodes=(
                pre.ManifestNode(
                    node_key=node_key, share_index=1, url="http://127.0.0.1", operator=""
                ),
            ),
            labels=(
                pre.LabelEntry(
                    label="account", key_epoch=0, capsule_hash=pre.capsule_hash(self.capsule)
                ),
            ),
            devices=tuple(entries[k] for k in sorted(entries)),
            grants=(),
            purges=(),
            signature=bytes(64),
        )
        return pre.sign_manifest(self.account.secrets, unsigned)


async def make_tenant(node: Node, *, grant: bool = False) -> Tenant:
    """Register a fresh account on `node`, certify a member, create capsule (account, 0);
    with `grant`, give the member a 1-of-1 grant for it."""
    now = node.clock()
    account = new_account(now)
    member = account.device(now, name="member")
    await node.client().register_account(account.record, account.admin.cert)
    admin_client = node.client(account, account.admin)
    await admin_client.put_device(member.cert)
    capsule, kek = pre.create_key_capsule(account.secrets, "account", 0, now=int(now))
    await admin_client.put_capsule(capsule)
    tenant = Tenant(node, account, member, capsule, kek, admin_client, node.client(account, member))
    if grant:
        await admin_client.put_grant(tenant.grant()[0])
    return tenant


@pytest.fixture
async def tenant(node: Node) -> Tenant:
    return await make_tenant(node)


def open_with_fragments(
    tenant: Tenant,
    device: Device,
    capsule: pre.KeyCapsule,
    fragments: list[bytes],
) -> pre.Kek:
    """What a device does with cfrags: verify each against the capsule, then open."""
    verified = [
        pre.verify_capsule_fragment(
            pre.CapsuleFragment.from_bytes(f),
            capsule=capsule,
            account=tenant.account.record,
            receiver=device.secrets,
        )
        for f in fragments
    ]
    return pre.open_key_capsule(device.secrets, capsule, verified)
