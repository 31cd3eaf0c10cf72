"""Threshold trust, part 2: the admin's records as a signed, versioned account manifest.

Each test fails on the SDK before the manifest: the admin decided what to rotate, grant
and re-grant from one node's listing, a member loaded its labels from one node, and a
node that missed a revocation stayed behind for good."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import pre
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.protocol.codes import Code
from cache_service.storage import RedisStorage
from client_sdk import (
    NodeError,
    NodeState,
    RollbackError,
    SnapshotInput,
    Statecache,
    ThresholdNotMet,
    enrollment_request,
)
from client_sdk.admin_records import AdminRecords
from client_sdk.keystore import Profile
from client_sdk.outcomes import LocalCode
from tests.client_sdk.conftest import (
    THRESHOLD,
    Cluster,
    Node,
    as_latest,
    bump,
    collect,
    groups,
    latest,
)

GROUP_LABEL = pre.label_for_group(b"team")


async def _account(cluster: Cluster, proxied: tuple[int, ...] = ()) -> tuple[Profile, list]:
    proxies = {i: await cluster.proxy(i) for i in proxied}
    urls = [proxies[i].url if i in proxies else u for i, u in enumerate(cluster.urls)]
    return await cluster.account(urls), [proxies[i] for i in proxied]


def _member(admin: Statecache, device: pre.DeviceSecrets) -> Profile:
    return Profile(admin.profile.account_id, device, list(admin.profile.nodes), THRESHOLD)


async def test_a_node_hiding_a_label_from_the_admin_does_not_spare_it_a_rotation(
    cluster: Cluster,
) -> None:
    """The revocation rotates every label the admin's manifest lists, whatever a node
    lists; a snapshot sealed under the group label afterwards does not open with the
    revoked device's keys."""
    profile, [proxy] = await _account(cluster, (0,))
    async with cluster.statecache(profile) as admin:
        await admin.add_label(GROUP_LABEL)
        laptop = await cluster.enrol(admin, labels=["account", GROUP_LABEL])
        async with cluster.statecache(laptop) as lap:
            await lap.load_keys()
            kept = dict(lap.keys)
        proxy.hide_capsules = lambda label: label.startswith("group:")
        report = await admin.revoke(laptop.device.device_id)
        assert report.rotated == {"account": 1, GROUP_LABEL: 1}
        team = SnapshotInput(b"team", "group_state", 1, b"after", label=GROUP_LABEL)
        await admin.publish([team])
        assert (GROUP_LABEL, 1) not in kept and (GROUP_LABEL, 0) in kept


async def test_a_node_hiding_grants_from_the_admin_does_not_cost_a_member_its_labels(
    cluster: Cluster,
) -> None:
    """Re-granting after a revocation follows the admin's records, not the nodes'."""
    profile, [proxy] = await _account(cluster, (0,))
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        tablet = await cluster.enrol(admin, name="tablet")
        proxy.hide_grants = True
        report = await admin.revoke(laptop.device.device_id)
        assert report.regranted == [tablet.device.device_id]
        updates = bump(first)
        await admin.publish(updates)
    async with cluster.statecache(tablet) as tab:
        assert as_latest(await collect(tab.onboard())) == latest(updates)


async def test_a_node_withholding_its_capsules_is_a_suspect_not_a_dead_end(
    cluster: Cluster,
) -> None:
    """A member's first node lists no capsules at all: the manifest says which labels the
    member holds, so that node contradicts it and the next one serves."""
    profile, [proxy] = await _account(cluster, (0,))
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
    proxy.hide_capsules = lambda label: True
    async with cluster.statecache(laptop) as lap:
        assert as_latest(await collect(lap.onboard())) == latest(first)
        outcome = lap.report.nodes[proxy.url]
        assert (outcome.state, outcome.code) == (NodeState.SUSPECT, LocalCode.INVALID_ANSWER)
        assert "hides account" in (outcome.message or "")


@pytest.mark.parametrize("how", ["repair", "next admin operation"])
async def test_a_revocation_with_a_node_down_converges_when_it_is_back(
    cluster: Cluster, how: str
) -> None:
    profile, _ = await _account(cluster)
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        down = cluster.nodes[2]
        await down.stop()
        report = await admin.revoke(laptop.device.device_id)
        assert set(report.receipts) == set(cluster.urls[:2])
        assert admin.outcomes[down.url].state is NodeState.UNAVAILABLE
        await down.start()
        if how == "repair":
            repaired = await admin.repair()
            assert repaired.nodes[down.url].state is NodeState.OK
            assert set(repaired.versions.values()) == {repaired.manifest_version}
        else:
            await admin.publish(bump(first))  # not an admin action: nothing converges
            await admin.add_label(GROUP_LABEL)  # this one does
            assert admin.outcomes[down.url].state is NodeState.OK
    # the node that was down now refuses the revoked laptop and takes the new key epoch
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(NodeError) as refused:
            await lap.nodes[2].list_capsules()
        assert refused.value.code is Code.DEVICE_REVOKED
    async with cluster.statecache(profile) as admin:
        listed = await admin.nodes[2].list_capsules()
        assert {(c.label, c.key_epoch) for c in listed.capsules if c.current} >= {("account", 1)}
        report = await admin.publish(bump(first, 2))
        assert report.nodes[down.url].state is NodeState.OK


async def test_two_admin_homes_racing_for_one_version_are_told_of_the_fork(
    cluster: Cluster,
) -> None:
    """A copy of the admin home signs its own next version after the first home did: every
    node holds the first's, so the second is refused and each node named a fork."""
    profile, _ = await _account(cluster)
    assert profile.records is not None
    twin = Profile(
        profile.account_id, profile.device, list(profile.nodes), profile.threshold,
        account=profile.account, node_keys=dict(profile.node_keys),
        records=AdminRecords.from_json(profile.records.to_json()),
    )  # fmt: skip
    async with cluster.statecache(profile) as first_home:
        await cluster.enrol(first_home)
    async with cluster.statecache(twin) as second_home:
        _, blob = enrollment_request(
            "tablet",
            account_id=second_home.profile.account_id,
            nodes=second_home.profile.nodes,
            threshold=second_home.profile.threshold,
        )
        with pytest.raises(ThresholdNotMet) as info:
            await second_home.approve(blob)
    assert {o.code for o in info.value.nodes.values()} == {LocalCode.FORK}
    # and a device reading the account sees the first home's version, not a fork
    async with cluster.statecache(profile) as first_home:
        manifest = await first_home.manifest()
    assert profile.records is not None and manifest is not None
    assert manifest.version == len(profile.records.manifests)


async def test_the_epoch_wedge_and_its_purge_reach_devices_that_accepted_it(
    cluster: Cluster,
) -> None:
    """A member publishes a group's first snapshot at epoch 2^53 - 1; another device
    accepts it. After the admin revokes the member and purges its snapshots of the group,
    the group takes honest epochs again and the device that held the wedge reads them."""
    profile, _ = await _account(cluster)
    group = hashlib.sha256(b"wedged").digest()[:16]
    async with cluster.statecache(profile) as admin:
        phone = await cluster.enrol(admin, name="phone")
        laptop = await cluster.enrol(admin)
        async with cluster.statecache(phone) as ph:
            await ph.publish([SnapshotInput(group, "group_state", 2**53 - 1, b"wedge")])
        async with cluster.statecache(laptop) as lap:
            got = await collect(lap.onboard())
            assert [s.mls_epoch for s in got if s.group_id == group] == [2**53 - 1]
            laptop_state = lap.state
            with pytest.raises(ThresholdNotMet):  # every node refuses anything lower
                await lap.publish([SnapshotInput(group, "group_state", 5, b"honest")])
        await admin.revoke(phone.device.device_id)
        with pytest.raises(ValueError, match="revoked"):
            await admin.purge(group, laptop.device.device_id)
        report = await admin.purge(group, phone.device.device_id)
        assert {r.deleted for r in report.receipts.values()} == {1}
        assert set(report.receipts) == set(cluster.urls)
    async with cluster.statecache(laptop, state=laptop_state) as lap:
        # the manifest's purge makes it forget the wedge; then honest epochs go through
        assert [s for s in await collect(lap.sync()) if s.group_id == group] == []
        assert (group, "group_state") not in lap.state.known
        report = await lap.publish([SnapshotInput(group, "group_state", 5, b"honest")])
        assert report.stored == 1
    async with cluster.statecache(laptop) as fresh:
        opened = [s for s in await collect(fresh.onboard()) if s.group_id == group]
        assert [(s.mls_epoch, s.plaintext) for s in opened] == [(5, b"honest")]


async def test_the_admin_device_and_this_device_cannot_be_revoked(cluster: Cluster) -> None:
    profile, _ = await _account(cluster)
    async with cluster.statecache(profile) as admin:
        with pytest.raises(ValueError, match="admin device or this device"):
            await admin.revoke(profile.device.device_id)


async def test_a_device_never_goes_back_to_an_older_manifest(cluster: Cluster) -> None:
    profile, _ = await _account(cluster)
    async with cluster.statecache(profile) as admin:
        await admin.publish(groups(1))
        laptop = await cluster.enrol(admin)
    async with cluster.statecache(laptop) as lap:
        await collect(lap.onboard())
        seen = lap.state.manifest_version
        assert seen >= 2
        lap.state.manifest_version = seen + 1  # as if it had verified a newer one
        with pytest.raises(RollbackError, match="manifest version"):
            await collect(lap.sync())


async def test_approving_a_device_uploads_at_most_4_kib_at_three_nodes(cluster: Cluster) -> None:
    """The certificate, one grant share per node and the manifest update (not the whole
    manifest), flat in the number of groups."""
    profile, _ = await _account(cluster)
    sizes = []
    async with cluster.statecache(profile) as admin:
        for count in (1, 50):
            await admin.publish(groups(count, tag=os.urandom(4).hex()))
            _, blob = enrollment_request(
                "laptop",
                account_id=admin.profile.account_id,
                nodes=admin.profile.nodes,
                threshold=admin.profile.threshold,
            )
            sizes.append((await admin.approve(blob)).upload_bytes)
    assert max(sizes) <= 4096, sizes
    assert abs(sizes[0] - sizes[1]) < 64, sizes


async def test_a_lost_node_is_replaced_and_every_grant_issued_again(
    cluster: Cluster, redis_servers: list[EmbeddedRedis], tmp_path: Path
) -> None:
    """Node 3 is lost for good; a new node (new key, empty store) takes share 3. Key
    fragments of two generations do not combine, so every grant is issued again to all
    three nodes; a member then opens its keys with node 1 down (nodes 2 and the new 3)."""
    profile, _ = await _account(cluster)
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        lost = cluster.nodes[2]
        await lost.stop()
        store = aioredis.Redis(unix_socket_path=redis_servers[2].socket)
        await store.flushdb()
        new = Node(3, tmp_path / "new-node", RedisStorage(store), cluster.clock)
        await new.start()
        cluster.nodes.append(new)  # stopped with the rest
        before = profile.records.generation if profile.records else 0
        report = await admin.replace_node(3, new.url)
        assert profile.nodes[2] == new.url and profile.node_keys[new.url] != b""
        assert report.nodes[new.url].state is NodeState.OK
        assert set(report.versions.values()) == {report.manifest_version}
        manifest = await admin.manifest()
        assert manifest is not None and manifest.grant_generation == before + 1
        assert manifest.nodes[2].url == new.url
        updates = bump(first)
        await admin.publish(updates)
    await cluster.nodes[0].stop()
    moved = Profile(laptop.account_id, laptop.device, list(profile.nodes), THRESHOLD)
    async with cluster.statecache(moved) as lap:
        assert as_latest(await collect(lap.onboard())) == latest(updates)
