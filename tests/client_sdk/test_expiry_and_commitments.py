"""Time-bound grants (the clock moves; nobody sleeps) and the delivery service's view of a
group (caller-supplied minimum epoch, tree hash, epoch authenticator)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from client_sdk.device import SnapshotInput
from client_sdk.errors import RollbackError, ThresholdNotMet
from client_sdk.verify import Commitments, OpenedSnapshot
from tests.client_sdk.conftest import Cluster, as_latest, collect, groups, latest

MINUTE = 60


async def test_an_expired_grant_yields_no_kek(cluster: Cluster) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin, grant_for=5 * MINUTE)

        async with cluster.statecache(laptop) as lap:  # inside the grant: fine
            assert as_latest(await collect(lap.onboard())) == latest(first)

        cluster.clock.advance(10 * MINUTE)  # nodes and devices alike
        async with cluster.statecache(laptop) as lap:
            got: list[OpenedSnapshot] = []
            with pytest.raises(ThresholdNotMet) as info:
                async for snap in lap.onboard():
                    got.append(snap)
            assert got == [] and lap.keys == {}
            assert "re-encryption" in str(info.value)
            # every node answered, each without a fragment: the grant is over everywhere
            assert set(info.value.failures) == set(cluster.urls)
            assert lap.report.suspects == {}

        # a new grant brings it back
        await admin.authorise(next(c for c, _ in await admin.list_devices() if c.name == "laptop"))
        async with cluster.statecache(laptop) as lap:
            assert as_latest(await collect(lap.onboard())) == latest(first)


async def test_a_grant_gone_from_the_nodes_yields_no_kek(cluster: Cluster) -> None:
    """Without a moved clock: the node's copy of the share expires with its Redis TTL, the
    device's capsules are no longer listed to it, and it is told so, not shown nothing."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        await admin.publish(groups(1))
        laptop = await cluster.enrol(admin, grant_for=1)
    await asyncio.sleep(1.5)
    async with cluster.statecache(laptop) as lap:
        got: list[OpenedSnapshot] = []
        with pytest.raises(ThresholdNotMet, match="no grant"):
            async for snap in lap.onboard():
                got.append(snap)
        assert got == [] and lap.keys == {}


TREE_HASH = hashlib.sha256(b"tree at epoch 5").digest()
AUTHENTICATOR = os.urandom(32)


def committed_group() -> list[SnapshotInput]:
    group_id = hashlib.sha256(b"committed").digest()[:16]
    return [
        SnapshotInput(
            group_id,
            "group_state",
            5,
            os.urandom(300),
            tree_hash=TREE_HASH,
            epoch_authenticator=AUTHENTICATOR,
        )
    ]


async def test_commitments(cluster: Cluster) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        others = groups(2)
        committed = committed_group()
        group_id = committed[0].group_id
        await admin.publish(others + committed)
        devices = [await cluster.enrol(admin, f"d{i}") for i in range(5)]

    # the delivery service is at epoch 9: everything the nodes hold for the group is older
    async with cluster.statecache(devices[0]) as dev:
        got: list[OpenedSnapshot] = []
        with pytest.raises(RollbackError):
            async for snap in dev.onboard(commitments={group_id: Commitments(min_epoch=9)}):
                got.append(snap)
        assert group_id not in {s.group_id for s in got}

    # at the delivery service's epoch, matching commitments pass
    for commitment in (
        Commitments(min_epoch=5),
        Commitments(min_epoch=5, tree_hash=TREE_HASH),
        Commitments(min_epoch=5, epoch_authenticator=AUTHENTICATOR),
        Commitments(min_epoch=5, tree_hash=TREE_HASH, epoch_authenticator=AUTHENTICATOR),
        Commitments(min_epoch=4, tree_hash=b"\x00" * 32),  # an older epoch: not compared
    ):
        async with cluster.statecache(devices[1]) as dev:
            dev.state = type(dev.state)()
            opened = await collect(dev.onboard(commitments={group_id: commitment}))
            assert as_latest(opened) == latest(others, committed), commitment
            assert dev.report.suspects == {}

    # a tree hash or authenticator other than the group's never opens
    for commitment in (
        Commitments(min_epoch=5, tree_hash=hashlib.sha256(b"another tree").digest()),
        Commitments(min_epoch=5, epoch_authenticator=os.urandom(32)),
    ):
        async with cluster.statecache(devices[2]) as dev:
            dev.state = type(dev.state)()
            got = []
            with pytest.raises(ThresholdNotMet) as info:
                async for snap in dev.onboard(commitments={group_id: commitment}):
                    got.append(snap)
            assert group_id not in {s.group_id for s in got}
            failures = info.value.failures.values()
            assert all("differs from the group" in (o.message or "") for o in failures)

    # sync: the device is up to date with the nodes, but the delivery service is ahead
    async with cluster.statecache(devices[3]) as dev:
        await collect(dev.onboard())
        assert await collect(dev.sync(commitments={group_id: Commitments(min_epoch=5)})) == []
        with pytest.raises(RollbackError):
            await collect(dev.sync(commitments={group_id: Commitments(min_epoch=6)}))
