"""One malicious node (a rewriting proxy in front of a real node, first in the node list):
every lie is detected, every time, and never turns into wrong plaintext."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cache_service.protocol.b64 import encode_b64url
from client_sdk.device import SnapshotInput, Statecache
from client_sdk.errors import RollbackError, ThresholdNotMet
from client_sdk.keystore import Profile
from tests.client_sdk.conftest import (
    Cluster,
    as_latest,
    assert_all_genuine,
    bump,
    collect,
    groups,
    latest,
)
from tests.client_sdk.malicious_proxy import MaliciousProxy

ROUNDS = 3


@dataclass
class World:
    cluster: Cluster
    proxy: MaliciousProxy  # in front of node 1, at position 1
    admin: Statecache
    laptop: Profile
    first: list[SnapshotInput]

    @property
    def honest(self) -> list[str]:
        return self.cluster.urls[1:]

    def device(self, profile: Profile | None = None) -> Statecache:
        return self.cluster.statecache(profile or self.laptop)

    async def new_device(self, name: str) -> Profile:
        return await self.cluster.enrol(self.admin, name)


@pytest.fixture
async def world(cluster: Cluster) -> AsyncIterator[World]:
    proxy = await cluster.proxy(0)
    profile = await cluster.account([proxy.url, *cluster.urls[1:]])
    async with cluster.statecache(profile) as admin:
        first = groups(4)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        yield World(cluster, proxy, admin, laptop, first)


# capsule fragments


@pytest.mark.parametrize("mode", ["flip", "garbage", "duplicate"])
async def test_bad_capsule_fragments_are_caught_and_the_kek_opens_from_two_honest_nodes(
    world: World, mode: str
) -> None:
    world.proxy.cfrags = mode
    positions = range(0, 381, 38) if mode == "flip" else range(ROUNDS)
    for position in positions:
        world.proxy.flip_at = position
        tampered = world.proxy.tampered
        async with world.device() as lap:  # a fresh device session: re-encrypts afresh
            opened = await collect(lap.onboard())
            assert world.proxy.tampered == tampered + 1
            assert world.proxy.url in lap.report.suspects, position
            assert set(lap.report.suspects) == {world.proxy.url}
            assert lap.keys[("account", 0)].secret == world.admin.keys[("account", 0)].secret
            assert as_latest(opened) == latest(world.first)
            assert_all_genuine(opened, world.first)


async def test_bad_capsule_fragments_and_one_node_down_fail_closed(world: World) -> None:
    world.proxy.cfrags = "flip"
    await world.cluster.nodes[2].stop()
    async with world.device() as lap:
        got = []
        with pytest.raises(ThresholdNotMet):
            async for snap in lap.onboard():
                got.append(snap)
        assert got == []
        assert lap.keys == {}


# swapped snapshots


@pytest.mark.parametrize("attack", ["swap_snapshots", "swap_ciphertexts"])
async def test_swapped_snapshots_never_open_and_the_device_reads_elsewhere(
    world: World, attack: str
) -> None:
    setattr(world.proxy, attack, True)
    for _ in range(ROUNDS):
        tampered = world.proxy.tampered
        async with world.device() as lap:
            opened = await collect(lap.onboard())
        assert world.proxy.tampered > tampered
        assert_all_genuine(opened, world.first)
        assert as_latest(opened) == latest(world.first)
        assert world.proxy.url in lap.report.suspects
        assert lap.report.primary == world.honest[0]

    # in a sync too, and for snapshots the device already holds (re-listed from cursor 0)
    async with world.device() as lap:
        setattr(world.proxy, attack, False)
        await collect(lap.onboard())
        updates = bump(world.first[:3])
        await world.admin.publish(updates)
        setattr(world.proxy, attack, True)
        synced = await collect(lap.sync())
        assert_all_genuine(synced, updates)
        assert as_latest(synced) == latest(updates)
        assert world.proxy.url in lap.report.suspects

        lap.state.cursors.pop(world.proxy.url)
        assert await collect(lap.sync()) == []
        assert world.proxy.url in lap.report.suspects
        assert lap.report.primary == world.honest[0]


# older epochs


async def test_a_node_serving_older_epochs_than_the_device_knows_is_refused(world: World) -> None:
    """The device knows epoch 6; the node rewrites its listing to the epoch 5 snapshots it
    captured earlier, or replays a whole stale listing. The old state is never yielded; the
    node is reported and the read completes from an honest node."""
    async with world.device() as lap:
        await collect(lap.onboard())  # the proxy captures epoch 5
        stale_page = world.proxy.listings[0]
        updates = bump(world.first)
        await world.admin.publish(updates)
        assert as_latest(await collect(lap.sync())) == latest(updates)  # knows epoch 6

        for attack in ("roll_back", "replay_listing"):
            more = bump(updates, 1)
            await world.admin.publish(more)
            world.proxy.honest()
            if attack == "roll_back":
                world.proxy.roll_back = True
            else:
                world.proxy.replay_listing = stale_page
            tampered = world.proxy.tampered
            synced = await collect(lap.sync())
            assert world.proxy.tampered > tampered
            assert_all_genuine(synced, more)
            assert as_latest(synced) == latest(more)
            why = lap.report.suspects[world.proxy.url]
            if attack == "roll_back":
                assert "went back" in why
            else:  # a newest-first page replayed for an ascending sync breaks the paging
                assert "out of order" in why or "outside the requested range" in why
            updates = more
        assert {k: v.mls_epoch for k, v in lap.state.known.items()} == {
            k: e for k, (e, _) in latest(updates).items()
        }


async def test_every_node_serving_older_epochs_is_a_rollback(cluster: Cluster) -> None:
    """Beyond the threat model (all N nodes collude), the device still never goes back."""
    proxies = [await cluster.proxy(i) for i in range(3)]
    profile = await cluster.account([p.url for p in proxies])
    async with cluster.statecache(profile) as admin:
        first = groups(2)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        async with cluster.statecache(laptop) as lap:
            await collect(lap.onboard())
            for node in lap.nodes:  # every proxy captures the epoch 5 snapshots
                await node.list_snapshots()
            updates = bump(first)
            await admin.publish(updates)
            await collect(lap.sync())  # the device now knows epoch 6
            await admin.publish(bump(updates))
            for p in proxies:
                p.roll_back = True
            got = []
            with pytest.raises(RollbackError):
                async for snap in lap.sync():
                    got.append(snap)
            assert got == []
            assert all(k.mls_epoch == 6 for k in lap.state.known.values())


async def test_a_fresh_device_served_old_epochs_ends_on_the_newest(world: World) -> None:
    """A device that knows nothing yet cannot tell an old snapshot from the newest; the
    cross-check with another node finds the newer epoch and reports the node."""
    async with world.device(await world.new_device("witness")) as witness:
        await collect(witness.onboard())  # the proxy captures epoch 5
    updates = bump(world.first)
    await world.admin.publish(updates)
    world.proxy.roll_back = True
    async with world.device() as lap:
        opened = await collect(lap.onboard())
    assert world.proxy.tampered > 0
    assert_all_genuine(opened, world.first, updates)
    assert as_latest(opened) == latest(updates)
    assert world.proxy.url in lap.report.suspects


# dropped snapshots


async def test_a_dropped_snapshot_is_fetched_from_another_node(world: World) -> None:
    dropped = world.first[3]
    world.proxy.drop = lambda item: (
        item["kind"] == dropped.kind and item["group_id"] == encode_b64url(dropped.group_id)
    )
    for _ in range(ROUNDS):
        tampered = world.proxy.tampered
        async with world.device() as lap:
            opened = await collect(lap.onboard())
        assert world.proxy.tampered > tampered
        assert as_latest(opened) == latest(world.first)
        assert_all_genuine(opened, world.first)
        assert "left out" in lap.report.suspects[world.proxy.url]
        assert lap.report.primary == world.proxy.url

    # and an update left out of a sync
    world.proxy.drop = None
    async with world.device() as lap:
        await collect(lap.onboard())
        updates = bump(world.first[2:4])
        await world.admin.publish(updates)
        world.proxy.drop = lambda item: (
            item["group_id"] == encode_b64url(updates[1].group_id)
            and item["kind"] == updates[1].kind
        )
        synced = await collect(lap.sync())
        assert as_latest(synced) == latest(updates)
        assert "left out" in lap.report.suspects[world.proxy.url]


# the second opinion lies


async def test_a_lying_second_opinion_is_reported_not_believed(cluster: Cluster) -> None:
    """The node asked to confirm the listing claims other snapshots at the epochs the
    device holds, and serves forged ones when asked: unsigned claims are no fork."""
    proxy = await cluster.proxy(1)
    profile = await cluster.account([cluster.urls[0], proxy.url, cluster.urls[2]])
    async with cluster.statecache(profile) as admin:
        first = groups(3)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
    proxy.fake_digests = proxy.swap_ciphertexts = True
    for _ in range(ROUNDS):
        async with cluster.statecache(laptop) as lap:
            opened = await collect(lap.onboard())
        assert proxy.tampered > 0
        assert_all_genuine(opened, first)
        assert as_latest(opened) == latest(first)
        assert lap.report.primary == cluster.urls[0]
        assert set(lap.report.suspects) == {proxy.url}
