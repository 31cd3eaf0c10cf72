"""Tree snapshots: a group's `ratchet_tree_patch` snapshots are kept in large numbers (a
chain) and its `ratchet_tree` bases in a window (8 by default), and storing a new base
deletes that group's patches below the oldest base still kept, atomically with the store
and its quota accounting (the node stays blind: it reads only the clear kind)."""

from __future__ import annotations

import redis.asyncio as aioredis

from cache_service.embedded_redis import EmbeddedRedis
from cache_service.protocol.limits import SNAPSHOT_OVERHEAD
from cache_service.settings import Settings
from cache_service.storage import SnapshotWrite
from cache_service.storage.base import WriteOutcome
from tests.cache_service.conftest import Node, StartNode, Tenant, expect_error, make_tenant

BASE, PATCH = "ratchet_tree", "ratchet_tree_patch"


def test_tree_pieces_are_retained_in_number_unless_configured() -> None:
    settings = Settings()
    assert settings.retention(PATCH) == 4000  # the SDK's 500 patches a chain, 8 chains
    assert settings.retention(BASE) == 8
    assert settings.retention("group_state") == 1
    assert Settings(retain_tree_patches=50).retention(PATCH) == 50
    assert Settings(retain_tree_bases=3).retention(BASE) == 3
    assert Settings(retain={PATCH: 7}).retention(PATCH) == 7  # `retain` names it: that wins
    env = Settings.from_env(
        {"STATECACHE_RETAIN_TREE_PATCHES": "64", "STATECACHE_RETAIN_TREE_BASES": "4"}
    )
    assert (env.retention(PATCH), env.retention(BASE)) == (64, 4)
    named = Settings.from_env(
        {"STATECACHE_RETAIN": "ratchet_tree=2", "STATECACHE_RETAIN_TREE_BASES": "4"}
    )
    assert named.retention(BASE) == 2


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
    node = await start_node(retain_tree_bases=1)  # the window is one base wide
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


async def stored_bytes(node: Node, tenant: Tenant) -> int:
    """What the account's snapshots take by the quota's rule, counted from what is stored."""
    rows, _, _ = await node.storage.list_snapshots(
        tenant.account.id_hex, descending=False, start=None, limit=10_000, group_id=None
    )
    return sum(len(r.data) + SNAPSHOT_OVERHEAD for r in rows)


def tree_chain(bases: int) -> list[tuple[str, int]]:
    """A base at every tenth epoch from 10, two patches after each."""
    out: list[tuple[str, int]] = []
    for b in range(1, bases + 1):
        out += [(BASE, 10 * b), (PATCH, 10 * b + 1), (PATCH, 10 * b + 2)]
    return out


async def test_a_window_of_bases_keeps_every_patch_above_its_oldest(
    start_node: StartNode, redis_server: EmbeddedRedis
) -> None:
    node = await start_node()  # 8 bases, 4,000 patches
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    for kind, epoch in tree_chain(10):
        newest = tenant.seal(group=b"g", kind=kind, epoch=epoch)
        await admin.put_snapshot(newest)
        assert await node.storage.usage(tenant.account.id_hex) == (
            await stored_bytes(node, tenant),
            1,
        )
    # bases 30..100 are kept (the newest 8), and every patch from 30 on: every epoch from
    # 30 can be rebuilt; the patches of the two dropped chains (11, 12, 21, 22) are gone
    window = [(k, e) for k, e in tree_chain(10) if e >= 30]
    assert await kept(tenant, b"g") == sorted(window)
    assert await snapshot_keys(redis_server, tenant) == len(window)

    # a retry of the newest patch, or a stale base, prunes nothing more
    assert (await admin.put_snapshot(newest)).status == "duplicate"
    await expect_error(admin.put_snapshot(tenant.seal(group=b"g", kind=BASE, epoch=95)),
                       409, "stale_epoch")  # fmt: skip
    assert await kept(tenant, b"g") == sorted(window)


async def test_retain_naming_ratchet_tree_wins(start_node: StartNode) -> None:
    node = await start_node(retain={BASE: 2}, retain_tree_bases=8)
    tenant = await make_tenant(node)
    for kind, epoch in tree_chain(4):
        await tenant.admin_client.put_snapshot(tenant.seal(group=b"g", kind=kind, epoch=epoch))
    assert await kept(tenant, b"g") == sorted((k, e) for k, e in tree_chain(4) if e >= 30)
    assert await node.storage.usage(tenant.account.id_hex) == (
        await stored_bytes(node, tenant),
        1,
    )


async def test_a_lowered_window_prunes_below_the_oldest_base_it_keeps(
    start_node: StartNode,
) -> None:
    """An operator who lowers `retain_tree_bases`: the next base drops every base beyond
    the new window at once, and the patches below the oldest base left."""
    node = await start_node()
    tenant = await make_tenant(node)
    for kind, epoch in tree_chain(6):
        await tenant.admin_client.put_snapshot(tenant.seal(group=b"g", kind=kind, epoch=epoch))
    snap = tenant.seal(group=b"g", kind=BASE, epoch=70)
    outcome = await node.storage.publish(
        tenant.account.id_hex,
        SnapshotWrite(
            label="account", key_epoch=0, group_id=b"g", kind=BASE, mls_epoch=70,
            author=tenant.account.admin.secrets.device_id.hex(),
            digest=snap.digest, data=snap.to_bytes(), retain=3, prunes=PATCH,
        ),
    )  # fmt: skip
    assert outcome.status is WriteOutcome.STORED
    rows, _, _ = await node.storage.list_snapshots(
        tenant.account.id_hex, descending=False, start=None, limit=100, group_id=b"g"
    )
    assert sorted((r.kind, r.mls_epoch) for r in rows) == sorted(
        [(BASE, 50), (PATCH, 51), (PATCH, 52), (BASE, 60), (PATCH, 61), (PATCH, 62), (BASE, 70)]
    )
    assert await node.storage.usage(tenant.account.id_hex) == (
        await stored_bytes(node, tenant),
        1,
    )
