"""Nodes that keep more than one snapshot per (group, kind) (`STATECACHE_RETAIN`) serve
the older ones as history: a read delivers each (group, kind)'s newest, once, and blames
no node for the older ones a node keeps beside it. A node holding only an older one than
the device holds is still behind, and a read where no node serves what the device holds
is still a rollback."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from client_sdk.device import SnapshotInput
from client_sdk.errors import RollbackError
from client_sdk.outcomes import NodeState
from client_sdk.verify import OpenedSnapshot
from tests.client_sdk.conftest import (
    Cluster,
    as_latest,
    assert_all_genuine,
    bump,
    collect,
    groups,
    latest,
)

RETAIN = {"group_state": 3, "ratchet_tree": 3}


async def _retaining(cluster: Cluster) -> None:
    for node in cluster.nodes:
        await node.stop()
        node.settings = {"retain": RETAIN}
        await node.start()


def _epochs(snaps: Sequence[OpenedSnapshot | SnapshotInput]) -> list[tuple[bytes, str, int]]:
    return sorted((s.group_id, s.kind, s.mls_epoch) for s in snaps)


async def test_onboarding_and_sync_read_retained_snapshots_as_history(cluster: Cluster) -> None:
    await _retaining(cluster)
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(3)
        second = bump(first)
        third = bump(second)
        for batch in (first, second, third):
            await admin.publish(batch)
        laptop = await cluster.enrol(admin, "laptop")
        async with cluster.statecache(laptop) as lap:
            onboarded = await collect(lap.onboard())
            # each (group, kind) once, at its newest epoch; the kept epochs 5 and 6 are
            # history, not a rollback, and no node is blamed for keeping them
            assert _epochs(onboarded) == _epochs(third)
            assert as_latest(onboarded) == latest(first, second, third)
            assert_all_genuine(onboarded, third)
            assert lap.report.suspects == {}
            assert lap.report.complete, lap.report.incomplete
            assert all(o.state is NodeState.OK for o in lap.report.nodes.values())

            # sync, oldest first: two new epochs of two groups, only the newest delivered
            fourth = bump(third[:4])
            fifth = bump(fourth)
            await admin.publish(fourth)
            await admin.publish(fifth)
            synced = await collect(lap.sync())
            assert _epochs(synced) == _epochs(fifth)
            assert_all_genuine(synced, fifth)
            assert lap.report.suspects == {}
            assert lap.report.complete, lap.report.incomplete
            assert await collect(lap.sync()) == []
            assert lap.report.suspects == {}

        # a device that syncs from nothing (never onboarded) reads history the same way
        tablet = await cluster.enrol(admin, "tablet")
        async with cluster.statecache(tablet) as tab:
            synced = await collect(tab.sync())
            assert as_latest(synced) == latest(first, second, third, fourth, fifth)
            assert len(synced) == len(third)
            assert tab.report.suspects == {}
            assert tab.report.complete, tab.report.incomplete


async def test_a_node_holding_only_an_older_snapshot_is_still_behind(cluster: Cluster) -> None:
    await _retaining(cluster)
    profile = await cluster.account()
    group = os.urandom(16)

    def state(epoch: int) -> list[SnapshotInput]:
        return [SnapshotInput(group, "group_state", epoch, os.urandom(64))]

    async with cluster.statecache(profile) as admin:
        await admin.publish(state(5))
        laptop = await cluster.enrol(admin, "laptop")
        tablet = await cluster.enrol(admin, "tablet")
        async with cluster.statecache(laptop) as lap:
            assert [s.mls_epoch for s in await collect(lap.onboard())] == [5]
            # node 1 (read first) misses epochs 6 and 7, down while they were published:
            # it keeps only 5; nodes 2 and 3 keep 5, 6 and 7
            lagging = cluster.nodes[0]
            await lagging.stop()
            await admin.publish(state(6))
            await admin.publish(state(7))
            await lagging.start()
            assert [s.mls_epoch for s in await collect(lap.sync())] == [7]  # 6 is history
            assert set(lap.report.suspects) == {lagging.url}  # it left 7 out
            # read everything again: node 1 serves only 5, below what the device holds
            lap.state.cursors.clear()
            assert await collect(lap.sync()) == []
            assert set(lap.report.suspects) == {lagging.url}
            assert lap.report.nodes[lagging.url].state is NodeState.BEHIND
            assert "went back from 7 to 5" in lap.report.suspects[lagging.url]
    async with cluster.statecache(tablet) as tab:  # knows nothing: 5 is news, then 7
        assert [s.mls_epoch for s in await collect(tab.onboard())] == [5, 7]
        assert set(tab.report.suspects) == {lagging.url}


async def test_no_node_serving_the_held_epoch_is_still_a_rollback(cluster: Cluster) -> None:
    await _retaining(cluster)
    proxies = [await cluster.proxy(i) for i in range(3)]
    profile = await cluster.account([p.url for p in proxies])
    group = os.urandom(16)
    async with cluster.statecache(profile) as admin:
        for epoch in (5, 6):
            await admin.publish([SnapshotInput(group, "group_state", epoch, os.urandom(64))])
        laptop = await cluster.enrol(admin, "laptop")
        async with cluster.statecache(laptop) as lap:
            assert [s.mls_epoch for s in await collect(lap.onboard())] == [6]
            # every node now hides epoch 6: what it serves of the group is the kept 5
            for proxy in proxies:
                proxy.drop = lambda item: item["mls_epoch"] == 6
            lap.state.cursors.clear()  # read everything again
            with pytest.raises(RollbackError):
                await collect(lap.sync())
            assert all(p.tampered > 0 for p in proxies)
            assert lap.state.known[(group, "group_state")].mls_epoch == 6


async def test_a_node_claiming_newer_snapshots_hides_nothing_others_serve(
    cluster: Cluster,
) -> None:
    """A node's metadata listing is unsigned: claiming a newer snapshot of every (group,
    kind) makes only what that node serves read as history (it hides what it holds, as
    leaving it out would), never what other nodes serve."""
    await _retaining(cluster)
    liar = await cluster.proxy(1)
    urls = cluster.urls
    profile = await cluster.account([urls[0], liar.url, urls[2]])
    async with cluster.statecache(profile) as admin:
        first = groups(3)
        second = bump(first)
        for batch in (first, second):
            await admin.publish(batch)
        laptop = await cluster.enrol(admin, "laptop")
        liar.inflate_epochs = 100
        async with cluster.statecache(laptop) as lap:
            onboarded = await collect(lap.onboard())
            assert liar.tampered
            assert _epochs(onboarded) == _epochs(second)
            assert_all_genuine(onboarded, second)
            assert lap.report.complete, lap.report.incomplete
            # the node read first misses the next epochs: only the liar and node 3 hold them
            lagging = cluster.nodes[0]
            await lagging.stop()
            third = bump(second[:2])
            await admin.publish(third)
            await lagging.start()
            synced = await collect(lap.sync())
            assert _epochs(synced) == _epochs(third)
            assert_all_genuine(synced, third)
            # the liar's claims of epochs it does not serve are checked, and named
            assert lap.report.nodes[liar.url].state is NodeState.SUSPECT
            assert lap.report.nodes[lagging.url].state is NodeState.BEHIND  # left them out
            assert lap.report.nodes[urls[2]].state is NodeState.OK
