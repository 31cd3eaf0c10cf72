"""The account manifest (compare-and-set per version, whole or as an update), purges of a
revoked author's snapshots, and the bound on how far an MLS epoch may jump."""

from __future__ import annotations

import pre
from tests.cache_service.conftest import Node, Tenant, expect_error, make_tenant


async def _key(tenant: Tenant) -> bytes:
    return (await tenant.admin_client.node_info()).public_key


async def test_versions_follow_one_another_whole_or_as_updates(tenant: Tenant) -> None:
    admin, key = tenant.admin_client, await _key(tenant)
    v1 = tenant.manifest(key)
    await expect_error(admin.get_manifest(), 404, "not_found")
    stored = await admin.put_manifest(v1)
    assert (stored.version, stored.digest, stored.manifest) == (1, v1.digest, v1.to_bytes())
    assert (await admin.put_manifest(v1)).version == 1  # an identical retry
    newcomer = tenant.account.device(tenant.now, name="newcomer")
    v2 = tenant.manifest(key, base=v1, devices=(newcomer,))
    update = pre.manifest_update(v1, v2)
    assert len(update.to_bytes()) < len(v2.to_bytes())
    assert (await admin.put_manifest(update)).manifest == v2.to_bytes()  # rebuilt whole
    fetched = await tenant.member_client.get_manifest()  # every device of the account reads it
    assert pre.AccountManifest.from_bytes(fetched.manifest) == v2
    # an update of a version not stored, a skipped version, a fork at the stored one
    err = await expect_error(admin.put_manifest(update), 409, "conflict")
    assert err.problem["current_version"] == 2
    v4 = tenant.manifest(key, base=tenant.manifest(key, base=v2))
    await expect_error(admin.put_manifest(v4), 409, "conflict")
    fork = pre.sign_manifest(tenant.account.secrets, v2.replace(issued_at=v2.issued_at + 1))
    await expect_error(admin.put_manifest(fork), 409, "conflict")
    assert (await admin.get_manifest()).version == 2


async def test_only_the_root_and_only_an_admin_write_the_manifest(node: Node) -> None:
    tenant, other = await make_tenant(node), await make_tenant(node)
    key = await _key(tenant)
    await expect_error(tenant.member_client.put_manifest(tenant.manifest(key)), 403, "forbidden")
    forged = pre.sign_manifest(other.account.secrets, tenant.manifest(key))
    await expect_error(tenant.admin_client.put_manifest(forged), 400, "invalid_record")
    await expect_error(tenant.admin_client.put_manifest(other.manifest(key)), 400, "invalid_record")


async def test_a_node_holding_nothing_takes_any_version_whole_but_no_update(
    tenant: Tenant,
) -> None:
    """A new or replacement node starts from the admin's current version."""
    key = await _key(tenant)
    v1 = tenant.manifest(key)
    v2 = tenant.manifest(key, base=v1)
    err = await expect_error(
        tenant.admin_client.put_manifest(pre.manifest_update(v1, v2)), 409, "conflict"
    )
    assert err.problem["current_version"] == 0
    assert (await tenant.admin_client.put_manifest(v2)).version == 2


async def test_a_purge_deletes_the_revoked_authors_snapshots_from_an_epoch_on(
    node: Node,
) -> None:
    tenant = await make_tenant(node, grant=True)
    admin, now = tenant.admin_client, int(tenant.now)
    member = tenant.member
    group = b"wedged group"
    # the first snapshot of a (group, kind) may take any epoch: a member wedges the group
    wedge = await tenant.member_client.publish(
        [
            tenant.seal(author=member, group=group, epoch=2**53 - 1),
            tenant.seal(author=member, group=group, kind="ratchet_tree", epoch=7),
            tenant.seal(author=member, group=group, kind="ratchet_tree_patch", epoch=3),
        ]
    )
    assert [r.status for r in wedge.results] == ["stored"] * 3
    purge = pre.purge_group(
        tenant.account.secrets, group, member.secrets.device_id, from_epoch=5, now=now
    )
    await expect_error(admin.purge(purge), 409, "conflict")  # not revoked yet
    # the wedge: nobody can publish the group's state above the revoked member's epoch
    await admin.revoke(pre.revoke_device(tenant.account.secrets, member.secrets.device_id, now=now))
    await expect_error(admin.put_snapshot(tenant.seal(group=group, epoch=4)), 409, "stale_epoch")
    receipt = (await admin.purge(purge)).verify(await _key(tenant))
    assert (receipt.deleted, receipt.purge_digest) == (2, pre.purge_digest(purge.to_bytes()))
    listed = await admin.list_snapshots(group_id=group, data=False)
    assert [(i.kind, i.mls_epoch) for i in listed.items] == [("ratchet_tree_patch", 3)]
    stored = await admin.put_snapshot(tenant.seal(group=group, epoch=4))  # unwedged
    assert stored.status == "stored"
    assert (await admin.purge(purge)).deleted == 0  # idempotent
    await expect_error(tenant.member_client.purge(purge), 403, "device_revoked")


async def test_an_epoch_may_not_jump_far_above_the_stored_one(tenant: Tenant) -> None:
    admin = tenant.admin_client
    assert (await admin.put_snapshot(tenant.seal(epoch=2**53 - 70_000))).status == "stored"
    first = 2**53 - 70_000
    err = await expect_error(
        admin.put_snapshot(tenant.seal(epoch=first + 65_537)), 409, "epoch_too_far"
    )
    assert err.current_epoch == first
    assert (await admin.put_snapshot(tenant.seal(epoch=first + 65_536))).status == "stored"
    # another kind of the group starts anywhere (up to 2^53 - 1)
    top = tenant.seal(kind="ratchet_tree", epoch=2**53 - 1)
    assert (await admin.put_snapshot(top)).status == "stored"
