"""Tree snapshots: a group's `ratchet_tree_patch` snapshots are kept in large numbers (a
chain), and storing a new `ratchet_tree` base deletes that group's patches below its MLS
epoch, atomically with the store (the node stays blind: it reads only the clear kind)."""

from __future__ import annotations

import redis.asyncio as aioredis

from cache_service.embedded_redis import EmbeddedRedis
from cache_service.settings import Settings
from tests.cache_service.conftest import StartNode, Tenant, expect_error, make_tenant

BASE, PATCH = "ratchet_tree", "ratchet_tree_patch"


def test_patches_are_retained_in_number_unless_configured() -> None:
    settings = Settings()
    assert settings.retention(PATCH) == 1000
    assert settings.retention(BASE) == settings.retention("group_state") == 1
    assert Settings(retain_tree_patches=50).retention(PATCH) == 50
    assert Settings(retain={PATCH: 7}).retention(PATCH) == 7  # `retain` names it: that wins
    env = Settings.from_env({"STATECACHE_RETAIN_TREE_PATCHES": "64"})
    assert env.retention(PATCH) == 64


async def kept(tenant: Tenant, group: bytes) -> list[tuple[str, int]]:
    page = await tenant.admin_client.list_snapshots(group_id=group, limit=500)
    return sorted((i.kind, i.mls_epoch) for i in page.items)


async def snapshot_keys(redis_server: EmbeddedRedis, tenant: Tenant) -> int:
    client = aioredis.Redis(unix_socket_path=redis_server.socket)
    try:
        pattern = f"sc:{{{tenant.account.id_hex}}}:snap:*"
        return len([k async for k in client.scan_iter(match=pattern)])
    finally:
        await client.aclose()


async def test_a_new_base_prunes_the_older_patches_of_its_group(
    start_node: StartNode, redis_server: EmbeddedRedis
) -> None:
    node = await start_node()
    tenant = await make_tenant(node)
    admin = tenant.admin_client

    async def put(group: bytes, kind: str, epoch: int) -> None:
        await admin.put_snapshot(tenant.seal(group=group, kind=kind, epoch=epoch))

    await put(b"g", BASE, 10)
    for epoch in range(11, 16):
        await put(b"g", PATCH, epoch)
    await put(b"g", "group_state", 15)
    await put(b"other", BASE, 3)
    await put(b"other", PATCH, 4)
    # every patch is kept (the default retention keeps a long chain)
    assert await kept(tenant, b"g") == sorted(
        [(BASE, 10), *((PATCH, e) for e in range(11, 16)), ("group_state", 15)]
    )

    # a new base at epoch 14 (a device that rebased while another's patches were in
    # flight): patches below 14 go, those at 14 and 15 stay; the older base goes by
    # retention (1)
    await put(b"g", BASE, 14)
    assert await kept(tenant, b"g") == [
        ("group_state", 15),
        (BASE, 14),
        (PATCH, 14),
        (PATCH, 15),
    ]
    # the other group is untouched, in the feed too
    assert await kept(tenant, b"other") == [(BASE, 3), (PATCH, 4)]
    feed = await admin.list_snapshots(limit=500)
    assert sorted((i.group_id, i.kind, i.mls_epoch) for i in feed.items) == [
        (b"g", "group_state", 15),
        (b"g", BASE, 14),
        (b"g", PATCH, 14),
        (b"g", PATCH, 15),
        (b"other", BASE, 3),
        (b"other", PATCH, 4),
    ]
    # really deleted from Redis, not only from the indexes
    assert await snapshot_keys(redis_server, tenant) == 6

    # patches still only move forward, and a later base prunes up to itself
    await expect_error(admin.put_snapshot(tenant.seal(group=b"g", kind=PATCH, epoch=15)),
                       409, "conflict")  # fmt: skip
    await put(b"g", PATCH, 16)
    await put(b"g", BASE, 17)
    assert await kept(tenant, b"g") == [("group_state", 15), (BASE, 17)]


async def test_an_identical_retry_of_a_base_prunes_nothing_more(start_node: StartNode) -> None:
    node = await start_node()
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    base = tenant.seal(group=b"g", kind=BASE, epoch=5)
    await admin.put_snapshot(base)
    await admin.put_snapshot(tenant.seal(group=b"g", kind=PATCH, epoch=6))
    await admin.put_snapshot(base)  # a duplicate: not stored again, prunes nothing
    assert await kept(tenant, b"g") == [(BASE, 5), (PATCH, 6)]


async def test_patch_retention_bounds_a_chain(start_node: StartNode) -> None:
    node = await start_node(retain_tree_patches=3)
    tenant = await make_tenant(node)
    for epoch in range(1, 7):
        await tenant.admin_client.put_snapshot(tenant.seal(group=b"g", kind=PATCH, epoch=epoch))
    assert await kept(tenant, b"g") == [(PATCH, 4), (PATCH, 5), (PATCH, 6)]
