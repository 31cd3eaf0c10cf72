"""Nodes that are down or hang: with N - M of them the device works; with one more it
fails closed (ThresholdNotMet, nothing yielded); a hanging node costs at most the retry
policy's timeouts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from client_sdk.device import Statecache
from client_sdk.errors import ThresholdNotMet
from client_sdk.fanout import RetryPolicy
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


async def drain(read: AsyncIterator[OpenedSnapshot]) -> list[OpenedSnapshot]:
    """What a read yielded before it failed (it must fail with ThresholdNotMet)."""
    got: list[OpenedSnapshot] = []
    with pytest.raises(ThresholdNotMet):
        async for snap in read:
            got.append(snap)
    return got


@pytest.mark.parametrize("down", [0, 1, 2])
async def test_one_node_down_onboarding_and_sync_work(cluster: Cluster, down: int) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(4)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        dead = cluster.nodes[down]
        await dead.stop()

        async with cluster.statecache(laptop) as lap:
            onboarded = await collect(lap.onboard())
            assert as_latest(onboarded) == latest(first)
            assert_all_genuine(onboarded, first)
            assert set(lap.report.suspects) <= {dead.url}
            assert lap.report.primary != dead.url

            updates = bump(first[:3])
            report = await admin.publish(updates)  # two acknowledgements are enough
            assert report.stored == 3 and set(report.per_node_failures) == {dead.url}
            synced = await collect(lap.sync())
            assert as_latest(synced) == latest(updates)
            assert_all_genuine(synced, updates)

            # it comes back (same port, same data): reads carry on
            await dead.start()
            more = bump(updates[:1])
            await admin.publish(more)
            assert as_latest(await collect(lap.sync())) == latest(more)


@pytest.mark.parametrize("down", [(0, 1), (0, 2), (1, 2)])
async def test_two_nodes_down_fail_closed(cluster: Cluster, down: tuple[int, int]) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(3)
        await admin.publish(first)
        laptop = await cluster.enrol(admin, "laptop")
        tablet = await cluster.enrol(admin, "tablet")
        async with cluster.statecache(laptop) as lap:
            await collect(lap.onboard())
            await admin.publish(bump(first))
            cursors = dict(lap.state.cursors)
            for i in down:
                await cluster.nodes[i].stop()

            assert await drain(lap.sync()) == []
            assert lap.state.cursors == cursors  # nothing counted as seen
            with pytest.raises(ThresholdNotMet):
                await admin.publish(bump(first, 2))
            assert await drain(admin.sync()) == []  # the admin needs M device lists too
        async with cluster.statecache(tablet) as tab:
            assert await drain(tab.onboard()) == []
            assert tab.keys == {}


async def test_a_hanging_node_is_bounded_by_the_timeout(cluster: Cluster) -> None:
    """A node that accepts connections and never answers (position 2, so it is asked in
    every fan-out and as the second opinion) delays a read by at most its timeouts."""
    policy = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, timeout=1.0)
    hung = await cluster.proxy(1)
    urls = [cluster.urls[0], hung.url, cluster.urls[2]]
    profile = await cluster.account(urls)
    async with cluster.statecache(profile) as admin:
        first = groups(3)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)

    hung.hang = True
    async with Statecache(laptop, clock=cluster.clock, policy=policy) as lap:
        started = time.monotonic()
        onboarded = await collect(lap.onboard())
        took = time.monotonic() - started
    assert as_latest(onboarded) == latest(first)
    assert hung.hanging > 0
    # re-encryption and device list: 2 attempts x 1 s each; the second opinion: 1 s
    assert took < 2 * 2 * 1.0 + 1.0 + 2.0, took

    # hung plus one stopped: fewer than M answer, and the device gives up in bounded time
    await cluster.nodes[2].stop()
    async with Statecache(laptop, clock=cluster.clock, policy=policy) as lap:
        started = time.monotonic()
        assert await drain(lap.onboard()) == []
        took = time.monotonic() - started
    assert took < 2 * 1.0 + 2.0, took


async def test_retrying_a_failed_publish_does_not_fork_the_group(cluster: Cluster) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        laptop = await cluster.enrol(admin)
        state = groups(1)
        for node in cluster.nodes[1:]:
            await node.stop()
        with pytest.raises(ThresholdNotMet):  # node 1 stored it; too few to succeed
            await admin.publish(state)
        for node in cluster.nodes[1:]:
            await node.start()
        await admin.publish(state)  # the application retries: nodes 2 and 3 accept
    async with cluster.statecache(laptop) as lap:
        assert as_latest(await collect(lap.onboard())) == latest(state)
