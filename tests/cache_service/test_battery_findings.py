"""Regressions for what the reliability battery (tests/reliability) found in the node."""

from __future__ import annotations

import pre
from tests.cache_service.conftest import HOUR, Node, Tenant, expect_error, make_tenant, seal


async def test_grant_expiry_is_judged_by_the_nodes_clock(node: Node) -> None:
    """Listing and publishing went by the grant's Redis TTL, re-encryption by the node's
    clock: past the expiry by the node's clock, the member was still served snapshots
    and could publish."""
    tenant = await make_tenant(node, grant=True)  # one hour
    await tenant.admin_client.publish([tenant.seal(group=b"g", epoch=1)])
    member = tenant.member_client
    assert len((await member.list_capsules()).capsules) == 1
    assert len((await member.list_snapshots()).items) == 1

    node.clock.advance(2 * HOUR)  # Redis still holds the share: its TTL runs in real time
    assert (await member.list_capsules()).capsules == []
    assert (await member.list_snapshots()).items == []
    answer = await member.publish([tenant.seal(tenant.member, group=b"g", epoch=2)])
    assert answer.results[0].code == "forbidden"
    # re-encryption always went by the node's clock
    [result] = (await member.reencrypt()).results
    assert (result.fragment, result.code) == (None, "grant_not_applicable")


async def test_an_admin_reads_a_devices_unexpired_grant_shares(node: Node) -> None:
    """What `revoke` carries over to the next key epoch: exactly the shares the admin put,
    unexpired by the node's clock; members may not ask."""
    tenant: Tenant = await make_tenant(node)
    account_share = tenant.grant()[0]
    team = pre.label_for_group(b"team")
    team_capsule, _ = pre.create_key_capsule(tenant.account.secrets, team, 0, now=int(tenant.now))
    await tenant.admin_client.put_capsule(team_capsule)
    team_share = tenant.grant(team_capsule, ttl=3 * HOUR)[0]
    for share in (account_share, team_share):
        await tenant.admin_client.put_grant(share)

    member_id = tenant.member.secrets.device_id
    listed = await tenant.admin_client.device_grants(member_id)
    assert sorted(listed) == sorted([account_share.to_bytes(), team_share.to_bytes()])
    assert await tenant.admin_client.device_grants(tenant.account.admin.secrets.device_id) == []

    node.clock.advance(2 * HOUR)
    assert await tenant.admin_client.device_grants(member_id) == [team_share.to_bytes()]
    await expect_error(tenant.member_client.device_grants(member_id), 403, "forbidden")


async def test_a_snapshot_dated_where_readers_refuse_it_is_not_stored(node: Node) -> None:
    """A member could publish a snapshot dated far ahead (or before its certificate): every
    node stored it and every reader refused its author at that time, so no device of the
    account could onboard or sync any more."""
    tenant = await make_tenant(node)
    admin, now = tenant.account.admin, tenant.now
    year = 365 * 24 * HOUR

    def at(when: float, epoch: int) -> pre.SealedSnapshot:
        return seal(tenant.kek, admin, group=b"g", epoch=epoch, now=when)

    for bad in (at(now + year, 1), at(admin.cert.not_before - 1, 1)):
        answer = await tenant.admin_client.publish([bad])
        assert answer.results[0].code == "invalid_record", answer
    # a clock a little ahead, and a retry of an earlier seal, are fine
    for epoch, good in enumerate((at(now + 200, 1), at(now - 30, 2)), start=1):
        assert (await tenant.admin_client.publish([good])).results[0].seq is not None, epoch
