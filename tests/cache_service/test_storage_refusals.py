"""A Redis that answers but takes no writes (out of memory, a replica after a failover,
a full disk) makes requests 503 `unavailable`, never 500, and `/readyz` says so when it
cannot take writes at all. Real redis-servers, put in each state by CONFIG and REPLICAOF."""

from __future__ import annotations

import socket

import redis.asyncio as aioredis

from tests.cache_service.conftest import (
    Node,
    OwnRedis,
    RawResponse,
    StartNode,
    Tenant,
    assert_problem,
    make_tenant,
)


async def _publish(node: Node, tenant: Tenant) -> RawResponse:
    return await node.send(
        "PUT",
        f"/v1/accounts/{tenant.account.id_hex}/groups/Z3JvdXA/group_state",
        body=tenant.seal(group=b"group").to_bytes(),
        content_type="application/octet-stream",
        device=tenant.account.admin,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_out_of_memory_is_503_not_500(start_node: StartNode, own_redis: OwnRedis) -> None:
    server = await own_redis()
    node = await start_node(socket=server.socket)
    tenant = await make_tenant(node)
    admin = aioredis.Redis(unix_socket_path=server.socket)
    try:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", 1)
        resp = await node.send(
            "POST", f"/v1/accounts/{tenant.account.id_hex}/snapshots",
            body={"snapshots": []}, device=tenant.account.admin,
        )  # fmt: skip
        assert resp.status in (400, 503), resp.body[:200]  # refused before or at storage
        assert_problem(await _publish(node, tenant), 503, "unavailable")
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.aclose()


async def test_a_replica_is_not_ready_and_refuses_with_503(
    start_node: StartNode, own_redis: OwnRedis
) -> None:
    server = await own_redis()
    node = await start_node(socket=server.socket)
    tenant = await make_tenant(node)
    admin = aioredis.Redis(unix_socket_path=server.socket)
    try:
        assert (await node.send("GET", "/readyz")).status == 200
        await admin.execute_command("REPLICAOF", "127.0.0.1", _closed_port())
        assert_problem(await node.send("GET", "/readyz"), 503, "unavailable")
        assert_problem(await _publish(node, tenant), 503, "unavailable")
    finally:
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        await admin.aclose()
    assert (await node.send("GET", "/readyz")).status == 200
