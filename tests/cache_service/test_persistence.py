"""Everything a node acknowledged survives a restart of the app, a clean restart of Redis,
and a crash of Redis (SIGKILL) with `appendfsync always`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pre
from client_sdk.errors import StatecacheError
from tests.cache_service.conftest import (
    Node,
    OwnRedis,
    StartNode,
    Tenant,
    make_tenant,
    open_with_fragments,
)


@dataclass
class Stored:
    """What a tenant's devices can read back from a node."""

    account: bytes
    devices: list[tuple[str, bytes, bytes | None]]
    capsules: list[tuple[str, int, bool, bytes]]
    grants: list[tuple[str, int, str | None]]
    snapshots: list[tuple[int, str, bytes, int, bytes | None]]
    head: int


async def populate(tenant: Tenant) -> None:
    """Devices (one revoked), two labels with a rotation, grants, snapshots."""
    admin, account, now = tenant.admin_client, tenant.account, int(tenant.now)
    gone = account.device(now, name="gone")
    await admin.put_device(gone.cert)
    await admin.revoke(pre.revoke_device(account.secrets, gone.secrets.device_id, now=now))
    team = pre.label_for_group(b"team")
    team0, team_kek0 = pre.create_key_capsule(account.secrets, team, 0, now=now)
    team1, _ = pre.create_key_capsule(account.secrets, team, 1, now=now, previous=team_kek0)
    await admin.put_capsule(team0)
    await admin.put_capsule(team1)
    await admin.put_grant(tenant.grant()[0])
    await admin.put_grant(tenant.grant(team1)[0])
    await admin.publish([tenant.seal(group=f"g{i}".encode(), epoch=i + 1) for i in range(4)])
    await admin.put_snapshot(tenant.seal(group=b"g0", epoch=7))


async def read_back(node: Node, tenant: Tenant) -> Stored:
    admin = node.client(tenant.account, tenant.account.admin)
    member = node.client(tenant.account, tenant.member)
    devices = (await admin.list_devices()).devices
    capsules = (await admin.list_capsules()).capsules
    reencrypted = (await member.reencrypt()).results
    page = await member.list_snapshots(limit=500)
    assert page.next_cursor is None
    by_label = {(c.label, c.key_epoch): pre.KeyCapsule.from_bytes(c.capsule) for c in capsules}
    for r in reencrypted:  # every stored grant still works, with this node's identity
        assert r.fragment is not None, r
        open_with_fragments(tenant, tenant.member, by_label[(r.label, r.key_epoch)], [r.fragment])
    return Stored(
        account=(await admin.get_account()).account,
        devices=[(d.device_id, d.certificate, d.revocation) for d in devices],
        capsules=[(c.label, c.key_epoch, c.current, c.capsule) for c in capsules],
        grants=[(r.label, r.key_epoch, r.code) for r in reencrypted],
        snapshots=[(i.seq, i.kind, i.group_id, i.mls_epoch, i.snapshot) for i in page.items],
        head=page.head,
    )


def assert_populated(stored: Stored, tenant: Tenant) -> None:
    assert stored.account == tenant.account.record.to_bytes()
    assert len(stored.devices) == 3
    assert sum(1 for d in stored.devices if d[2] is not None) == 1
    assert [(c[0], c[1], c[2]) for c in stored.capsules] == [
        ("account", 0, True),
        (pre.label_for_group(b"team"), 0, False),
        (pre.label_for_group(b"team"), 1, True),
    ]
    assert stored.grants == [("account", 0, None), (pre.label_for_group(b"team"), 1, None)]
    assert [(s[0], s[2], s[3]) for s in stored.snapshots] == [
        (2, b"g1", 2),
        (3, b"g2", 3),
        (4, b"g3", 4),
        (5, b"g0", 7),
    ]
    assert stored.head == 5


async def test_app_restart_keeps_everything(start_node: StartNode) -> None:
    node = await start_node()
    tenant = await make_tenant(node)
    await populate(tenant)
    before = await read_back(node, tenant)
    assert_populated(before, tenant)
    await node.stop()

    restarted = await start_node(data_dir=node.settings.data_dir)
    after = await read_back(restarted, tenant)
    assert after == before


async def test_redis_restart_keeps_everything(start_node: StartNode, own_redis: OwnRedis) -> None:
    redis = await own_redis()
    node = await start_node(socket=redis.socket)
    tenant = await make_tenant(node)
    await populate(tenant)
    before = await read_back(node, tenant)
    assert_populated(before, tenant)

    await redis.stop()  # SIGTERM
    assert redis.pid is None
    await redis.start()
    # the running node reconnects, and a new node over the same Redis sees the same
    assert await read_back(node, tenant) == before
    await node.stop()
    restarted = await start_node(socket=redis.socket, data_dir=node.settings.data_dir)
    assert await read_back(restarted, tenant) == before


async def test_acknowledged_publishes_survive_a_redis_crash(
    start_node: StartNode, own_redis: OwnRedis
) -> None:
    redis = await own_redis(appendfsync="always")
    node = await start_node(socket=redis.socket)
    tenant = await make_tenant(node)
    snapshots = [tenant.seal(group=f"crash-{i}".encode(), epoch=i) for i in range(60)]
    queue = iter(snapshots)
    acknowledged: list[int] = []
    thirty = asyncio.Event()

    async def publisher() -> None:
        for snapshot in queue:
            try:
                result = await tenant.admin_client.put_snapshot(snapshot)
            except StatecacheError:
                continue  # not acknowledged: may or may not be stored
            # a retry of a write whose answer was lost is acknowledged as a duplicate
            assert result.status.value in ("stored", "duplicate")
            assert result.seq is not None
            acknowledged.append(result.seq)
            if len(acknowledged) == 30:
                thirty.set()

    publishers = [asyncio.ensure_future(publisher()) for _ in range(4)]
    await thirty.wait()
    redis.kill()  # SIGKILL, with requests in flight
    assert redis.pid is None
    killed_at = len(acknowledged)
    await redis.start()
    await asyncio.gather(*publishers)
    assert len(acknowledged) > killed_at  # publishing went on after the restart

    await node.stop()
    restarted = await start_node(socket=redis.socket, data_dir=node.settings.data_dir)
    page = await restarted.client(tenant.account, tenant.account.admin).list_snapshots(limit=500)
    present = {i.seq: i for i in page.items}
    missing = sorted(set(acknowledged) - set(present))
    assert not missing, f"acknowledged but lost: {missing}"
    # what is there is intact
    sent = {s.header.group_id: s.to_bytes() for s in snapshots}
    for item in page.items:
        assert item.snapshot == sent[item.group_id]
