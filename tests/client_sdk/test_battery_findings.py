"""Regressions for what the reliability battery (tests/reliability) found in the SDK: each
test is the shortest story that failed before its fix."""

from __future__ import annotations

import pytest

import pre
from cache_service.protocol.codes import Code
from client_sdk.device import SnapshotInput, Statecache
from client_sdk.errors import ThresholdNotMet
from client_sdk.policy import RetryPolicy
from client_sdk.verify import OpenedSnapshot
from tests.client_sdk.conftest import (
    POLICY,
    Cluster,
    as_latest,
    assert_all_genuine,
    bump,
    collect,
    groups,
    latest,
)

MINUTE, HOUR, DAY = 60, 3600, 86_400
GROUP = b"shared-group"
GROUP_LABEL = pre.label_for_group(GROUP)


def in_group(epoch: int = 1) -> list[SnapshotInput]:
    return [SnapshotInput(GROUP, "group_state", epoch, b"group state", label=GROUP_LABEL)]


async def certificate(admin: Statecache, name: str) -> pre.DeviceCertificate:
    return next(c for c, _ in await admin.list_devices() if c.name == name)


async def with_group_label(cluster: Cluster, items: list[SnapshotInput]) -> Statecache:
    """A new account with a `group:` label, and `items` published: an admin, open."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        await admin.add_label(GROUP_LABEL)
    admin = cluster.statecache(profile)
    await admin.__aenter__()
    await admin.publish(items)
    return admin


async def test_publishing_after_add_label_or_rotate_loads_the_other_keys(
    cluster: Cluster,
) -> None:
    """`add_label` and `rotate` cache one KEK; the device then held "some" keys and never
    loaded the others: publishing under another label failed ("holds no key")."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        await admin.add_label(GROUP_LABEL)
        assert (await admin.publish(groups(1))).stored == 2  # under `account`
    async with cluster.statecache(profile) as admin:  # a new process: no keys yet
        await admin.rotate("account")
        assert (await admin.publish(in_group())).stored == 1


async def test_after_a_rotation_the_admin_still_reads_the_older_key_epoch(
    cluster: Cluster,
) -> None:
    """`rotate` cached only the new epoch's KEK, and the key refresh looked only at each
    label's newest epoch: snapshots sealed before the rotation no longer opened."""
    profile = await cluster.account()
    first = groups(2)
    async with cluster.statecache(profile) as admin:
        await admin.publish(first)
    async with cluster.statecache(profile) as admin:
        await admin.rotate("account")
        assert as_latest(await collect(admin.onboard())) == latest(first)


@pytest.mark.parametrize("author_ahead", [0, 120])
async def test_a_snapshot_acknowledged_before_its_authors_revocation_stays_readable(
    cluster: Cluster, author_ahead: int
) -> None:
    """Published in the second of the revocation (or with the author's clock ahead of the
    admin's): readers took the author as revoked at that time, and since every node holds
    the snapshot, no read of the account succeeded any more."""
    profile = await cluster.account()
    now = float(int(cluster.clock()))
    async with Statecache(profile, clock=lambda: now, policy=POLICY) as admin:
        laptop = await cluster.enrol(admin, "laptop")
        tablet = await cluster.enrol(admin, "tablet")
        state = groups(1)
        async with Statecache(laptop, clock=lambda: now + author_ahead, policy=POLICY) as lap:
            await lap.publish(state)
        await admin.revoke(laptop.device.device_id)  # the same second
    async with cluster.statecache(tablet) as tab:
        opened = await collect(tab.onboard())
    assert as_latest(opened) == latest(state)
    assert_all_genuine(opened, state)


SLOW_POLICY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, timeout=30.0)


async def test_a_member_publishes_after_a_rotation_it_has_not_loaded(cluster: Cluster) -> None:
    """Sealed under the old key epoch, refused by every node, and then resent as the same
    bytes on every retry: the member could never publish that epoch. 300 items: two
    chunks, the second never sent when the first is refused."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        laptop = await cluster.enrol(admin, "laptop")
        tablet = await cluster.enrol(admin, "tablet")
        # 150 items a request, on three in-process nodes: more than POLICY's 2 s on a
        # loaded machine, and a timeout is not what this test is about
        async with cluster.statecache(laptop, policy=SLOW_POLICY) as lap:
            first = groups(150)
            await lap.publish(first)  # loads key epoch 0
            await admin.revoke(tablet.device.device_id)  # key epoch 1, laptop re-granted
            report = await lap.publish(bump(first))
            assert report.stored == 300
        page = await admin.nodes[0].list_snapshots(order="desc", limit=300)
        assert {i.key_epoch for i in page.items} == {1}


async def test_an_expired_grant_stops_reads_and_writes_by_the_nodes_clock(
    cluster: Cluster,
) -> None:
    """Nodes listed and accepted by the Redis TTL of a grant but re-encrypted by their own
    clock: past the expiry by the node's clock, a device holding the KEK still read new
    snapshots and could publish."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin, grant_for=5 * MINUTE)
        async with cluster.statecache(laptop) as lap:
            assert as_latest(await collect(lap.onboard())) == latest(first)
            cluster.clock.advance(10 * MINUTE)
            await admin.publish(bump(first))
            assert await collect(lap.sync()) == []
            with pytest.raises(ThresholdNotMet) as info:
                await lap.publish(bump(first, 2))
            assert all(o.code is Code.FORBIDDEN for o in info.value.failures.values())


async def test_revocation_regrants_each_member_what_it_held_until_the_same_expiry(
    cluster: Cluster,
) -> None:
    """`revoke` re-granted every remaining member every label for 30 days: a device limited
    to one group got the whole account, and a grant that had expired came back."""
    async with await with_group_label(cluster, [*groups(2), *in_group()]) as admin:
        laptop = await cluster.enrol(admin, "laptop", labels=[GROUP_LABEL], grant_for=7 * DAY)
        tablet = await cluster.enrol(admin, "tablet", grant_for=HOUR)
        phone = await cluster.enrol(admin, "phone")
        cluster.clock.advance(2 * HOUR)  # the tablet's grant is over
        report = await admin.revoke(phone.device.device_id)

        assert report.rotated == {"account": 1, GROUP_LABEL: 1}
        assert report.regranted == [laptop.device.device_id]
        for node in admin.nodes:
            shares = [pre.GrantShare.from_bytes(g) for g in await node.device_grants(
                laptop.device.device_id)]  # fmt: skip
            assert sorted((s.label, s.key_epoch) for s in shares) == [
                (GROUP_LABEL, 0),
                (GROUP_LABEL, 1),
            ]
            assert len({s.expires_at for s in shares}) == 1  # carried over, not extended
            assert await node.device_grants(tablet.device.device_id) == []

    async with cluster.statecache(laptop) as lap:
        opened = await collect(lap.onboard())
    assert {s.label for s in opened} == {GROUP_LABEL}
    async with cluster.statecache(tablet) as tab:
        with pytest.raises(ThresholdNotMet):
            await collect(tab.onboard())


async def test_sync_reads_the_history_of_a_label_granted_later(cluster: Cluster) -> None:
    """The sync cursor had moved past snapshots the nodes did not list to the device then:
    a label granted (or granted again) later never showed its existing state."""
    everything = groups(2)
    async with await with_group_label(cluster, [*everything, *in_group()]) as admin:
        laptop = await cluster.enrol(admin, "laptop", labels=[GROUP_LABEL])
        async with cluster.statecache(laptop) as lap:
            assert {s.label for s in await collect(lap.onboard())} == {GROUP_LABEL}
            await admin.authorise(await certificate(admin, "laptop"), labels=["account"])
            synced = await collect(lap.sync())
            assert as_latest(synced) == latest(everything)
            assert await collect(lap.sync()) == []


async def test_a_read_whose_second_opinions_are_gone_is_incomplete(
    cluster: Cluster,
) -> None:
    """With the other nodes down mid-read, the read ended in MissingSnapshot (a node's lie)
    rather than saying too few nodes were read, and nothing it yielded is unverified. Every
    node's listing is now read first: that read saw them all and is complete; the next one,
    with two of three nodes down,     fails: the account manifest needs M nodes."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(4)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
    got: list[OpenedSnapshot] = []
    async with cluster.statecache(laptop) as lap:
        reading = lap.onboard(page_size=2)
        got.append(await anext(reading))  # type: ignore[arg-type]
        for node in cluster.nodes[1:]:
            await node.stop()
        async for snap in reading:
            got.append(snap)  # type: ignore[arg-type]
        assert lap.state.onboarded and lap.report.complete
        with pytest.raises(ThresholdNotMet):
            await collect(lap.sync())
    assert_all_genuine(got, first)
