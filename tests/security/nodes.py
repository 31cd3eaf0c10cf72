"""A cache node as a real subprocess (`python -m cache_service`), for the checks that need
the process as it runs in production: its own memory (RSS from /proc), the server
settings `statecache serve` applies, and connections held open at the socket level.

`RemoteNode` offers the same `client`, `send` and `clock` as the in-process `Node` of
tests/cache_service/conftest.py, so `make_tenant` and friends work on it unchanged.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

import pre
from cache_service.protocol.b64 import decode_b64url
from client_sdk.local_nodes import LocalNode
from client_sdk.node_client import NodeClient
from tests.cache_service.conftest import (
    Account,
    Device,
    RawResponse,
    as_body,
    send_raw,
    short_tempdir,
    signed_headers,
)


def wall_clock() -> float:
    return time.time()


def rss_kib(pid: int) -> int:
    """Resident set size of one process, from /proc (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in map(int, children):
                out.append(child)
                pending.append(child)
    return out


@dataclass
class RemoteNode:
    local: LocalNode
    session: aiohttp.ClientSession
    clock = staticmethod(wall_clock)
    _node_id: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def pid(self) -> int:
        assert self.local.process is not None
        return self.local.process.pid

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def rss_kib(self) -> int:
        """The node process itself (HTTP, parsing, services)."""
        return rss_kib(self.pid)

    def tree_rss_kib(self) -> int:
        """The node with its embedded redis-server and re-encryption workers."""
        return sum(rss_kib(p) for p in (self.pid, *descendants(self.pid)))

    async def node_id(self) -> str:
        """The node's id (hex), as a device learns it: `GET /v1/node`, checked against the
        key it shows. Requests are signed for it (signature profile 2)."""
        if self._node_id is None:
            async with self.session.get(self.url + "/v1/node") as resp:
                assert resp.status == 200, resp.status
                info = await resp.json()
            key = decode_b64url(info["public_key"], max_bytes=32)
            assert pre.node_id_for(key).hex() == info["node_id"], info
            self._node_id = info["node_id"]
        return self._node_id

    def alive(self) -> bool:
        return self.local.process is not None and self.local.process.poll() is None

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
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
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
                    created=self.clock(),
                    node_id=await self.node_id(),
                )
            )
        all_headers.update(headers or {})
        url = self.url + path + ("?" + query if query else "")
        return await send_raw(self.session, method, url, data, all_headers)

    async def stop(self) -> None:
        await self.local.stop()
        shutil.rmtree(self.local.data_dir.parent, ignore_errors=True)


class SpawnNode(Protocol):
    def __call__(self, **env: str) -> Awaitable[RemoteNode]: ...


async def spawn_remote_node(session: aiohttp.ClientSession, env: dict[str, str]) -> RemoteNode:
    """One node process with its own data directory (short: it holds Redis's unix socket)."""
    data_dir = short_tempdir("sc-sec-") / "node"
    local = LocalNode(
        1,
        data_dir,
        workers=1,
        extra_env={f"STATECACHE_{k.upper()}": v for k, v in env.items()},
    )
    await local.start()
    return RemoteNode(local, session)
