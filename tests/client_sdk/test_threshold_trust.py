"""Threshold trust, part 1: what one node can no longer do to a device (each test fails on
the SDK before node-bound signatures, bounded reads and deadlines).

Against real nodes behind `MaliciousProxy`: a node replaying the device's request at
another node, a node answering with another node's fragment, endless paging, oversized
answers, an extra publish result, a cross-check node that errs, and hung nodes. Each
attack must really happen (`proxy.tampered`), the device must get the right state from the
honest nodes, and the node must be named in the per-node outcomes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from cache_service.protocol.codes import Code
from client_sdk import (
    LocalCode,
    NodeState,
    Statecache,
    ThresholdNotMet,
    create_account,
)
from client_sdk.keystore import Profile
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

# The documented bound: with N - M nodes hung, a command on a small account finishes in
# well under 10 s with the default policy (docs/SECURITY.md, "Bounds").
HUNG_BOUND = 10.0


async def _world(
    cluster: Cluster, proxied: tuple[int, ...], threshold: int = 2
) -> tuple[Profile, Profile, list, list]:
    """An account whose nodes at `proxied` positions sit behind proxies; 3 groups
    published; a laptop approved."""
    proxies = {i: await cluster.proxy(i) for i in proxied}
    urls = [proxies[i].url if i in proxies else u for i, u in enumerate(cluster.urls)]
    profile = await create_account(urls, threshold, clock=cluster.clock, policy=POLICY)
    async with cluster.statecache(profile) as admin:
        first = groups(3)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        laptop.threshold = threshold
    return profile, laptop, first, [proxies[i] for i in proxied]


async def test_a_request_replayed_at_another_node_is_refused_there(cluster: Cluster) -> None:
    """Node 1 sends the device's signed /reencrypt on to node 2 and answers with node 2's
    fragment as its own: node 2 refuses a request bound to node 1, and the device opens
    its keys from the two honest nodes."""
    _, laptop, first, [proxy] = await _world(cluster, (0,))
    proxy.replay_reencrypt_to = cluster.urls[1]
    async with cluster.statecache(laptop) as lap:
        opened = await collect(lap.onboard())
        assert proxy.tampered
        assert as_latest(opened) == latest(first)
        assert_all_genuine(opened, first)
        outcome = lap.report.nodes[proxy.url]
        assert (outcome.state, outcome.code) == (NodeState.SUSPECT, Code.WRONG_NODE)


async def test_another_nodes_fragment_does_not_stop_two_honest_nodes(cluster: Cluster) -> None:
    """Node 1 answers /reencrypt with a fragment it got from node 2 (captured earlier),
    posing as itself: every fragment verifies, but two come from one key fragment. The
    device tries other subsets and opens its keys."""
    _, laptop, first, [proxy1, proxy2] = await _world(cluster, (0, 1))
    async with cluster.statecache(laptop) as lap:
        await lap.load_keys()
    proxy1.foreign_fragments = proxy2.reencrypt_answers[-1]
    async with cluster.statecache(laptop) as lap:
        opened = await collect(lap.onboard())
        assert proxy1.tampered
        assert as_latest(opened) == latest(first)
        assert_all_genuine(opened, first)


@pytest.mark.parametrize("mode", ["stuck", "forever"])
async def test_endless_paging_is_cut_off_and_the_node_named(cluster: Cluster, mode: str) -> None:
    """The node the device reads from pages forever: a cursor that does not move, or
    empty pages whose cursor creeps up. The listing ends, the node is a suspect, and the
    read completes from another node."""
    _, laptop, first, [proxy] = await _world(cluster, (0,))
    policy = replace(POLICY, max_pages=100)
    async with Statecache(laptop, clock=cluster.clock, policy=policy) as lap:
        await collect(lap.onboard())  # honest: the sync after it pages upwards
        updates = bump(first)
        async with cluster.statecache(laptop) as writer:
            await writer.publish(updates)
        proxy.endless = mode
        synced = await asyncio.wait_for(collect(lap.sync()), 60)
        assert proxy.tampered
        assert as_latest(synced) == latest(updates)
        outcome = lap.report.nodes[proxy.url]
        assert (outcome.state, outcome.code) == (NodeState.SUSPECT, LocalCode.INVALID_ANSWER)
        assert "cursor does not move" in (outcome.message or "") or "100 pages" in (
            outcome.message or ""
        )
        assert lap.report.primary != proxy.url


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_oversized_answer_is_not_read_and_the_node_named(
    cluster: Cluster, streamed: bool
) -> None:
    """A node pads every answer past the device's cap (still valid JSON), announcing its
    length or streaming it: the device stops reading at the cap, names the node, and
    works with the other two."""
    _, laptop, first, [proxy] = await _world(cluster, (0,))
    proxy.pad_answers = 2 * 1024 * 1024
    proxy.stream_answers = streamed
    policy = replace(POLICY, max_answer_bytes=1024 * 1024)
    async with Statecache(laptop, clock=cluster.clock, policy=policy) as lap:
        opened = await collect(lap.onboard())
        assert proxy.tampered
        assert as_latest(opened) == latest(first)
        outcome = lap.report.nodes[proxy.url]
        assert (outcome.state, outcome.code) == (NodeState.SUSPECT, LocalCode.INVALID_ANSWER)
        assert "more than 1,048,576" in (outcome.message or "")


async def test_an_extra_publish_result_makes_the_node_a_suspect(cluster: Cluster) -> None:
    profile, _, first, [proxy] = await _world(cluster, (0,))
    proxy.extra_publish_result = True
    async with cluster.statecache(profile) as admin:
        report = await admin.publish(bump(first))
    assert proxy.tampered
    assert (report.stored, report.duplicates) == (len(first), 0)
    outcome = report.nodes[proxy.url]
    assert (outcome.state, outcome.code) == (NodeState.SUSPECT, LocalCode.INVALID_ANSWER)
    assert {report.nodes[u].state for u in cluster.urls[1:]} == {NodeState.OK}


async def test_a_cross_check_node_that_errs_does_not_abort_the_read(cluster: Cluster) -> None:
    """The second opinion lists snapshots the device must fetch, then fails the fetch:
    the node is named and the read completes (the third node also gives an opinion)."""
    _, laptop, first, [proxy] = await _world(cluster, (1,))
    proxy.fake_digests = True
    proxy.fail_group_listing = 500
    async with cluster.statecache(laptop) as lap:
        opened = await collect(lap.onboard())
        assert proxy.tampered
        assert as_latest(opened) == latest(first)
        assert lap.report.primary == cluster.urls[0]
        assert lap.report.nodes[proxy.url].state is NodeState.UNAVAILABLE


# hung nodes


async def _timed(coro: object) -> float:
    started = time.monotonic()
    await coro  # type: ignore[misc]
    return time.monotonic() - started


@pytest.mark.parametrize("position", [0, 2])
async def test_one_hung_node_costs_every_command_a_bounded_time(
    cluster: Cluster, position: int
) -> None:
    """With one node of three accepting connections and never answering, every command
    finishes within the bound with the default policy, and names that node."""
    profile, laptop, first, [proxy] = await _world(cluster, (position,))
    async with cluster.statecache(laptop) as lap:
        await collect(lap.onboard())
    proxy.hang = True
    updates = bump(first)
    admin_sc = Statecache(profile, clock=cluster.clock)  # the default policy
    async with admin_sc as admin:
        assert await _timed(admin.publish(updates)) < HUNG_BOUND
        assert admin.outcomes[proxy.url].state is NodeState.UNAVAILABLE
        assert await _timed(admin.list_devices()) < HUNG_BOUND
        _, blob = __import__("client_sdk").enrollment_request(
            "tablet",
            account_id=admin.profile.account_id,
            nodes=admin.profile.nodes,
            threshold=admin.profile.threshold,
        )
        assert await _timed(admin.approve(blob)) < HUNG_BOUND
        assert admin.outcomes[proxy.url].state is NodeState.UNAVAILABLE
    for read in ("sync", "onboard"):
        async with Statecache(laptop, clock=cluster.clock) as lap:
            if read == "onboard":
                lap.state = type(lap.state)()
            got: list = []

            async def run(lap: Statecache = lap, read: str = read, got: list = got) -> None:
                got.extend(await collect(lap.sync() if read == "sync" else lap.onboard()))

            assert await _timed(run()) < HUNG_BOUND, read
            assert as_latest(got) == latest(updates)
            outcome = lap.report.nodes[proxy.url]
            assert outcome.state is NodeState.UNAVAILABLE, outcome
            assert outcome.code in (LocalCode.TIMEOUT, LocalCode.SLOW, LocalCode.SKIPPED)


async def test_two_hung_nodes_of_three_fail_fast_naming_both(cluster: Cluster) -> None:
    """One more hung node than the threshold allows: the command fails closed within the
    bound, with both nodes named."""
    _, laptop, _, proxies = await _world(cluster, (0, 2))
    for proxy in proxies:
        proxy.hang = True
    async with Statecache(laptop, clock=cluster.clock) as lap:
        started = time.monotonic()
        with pytest.raises(ThresholdNotMet) as info:
            await collect(lap.onboard())
        assert time.monotonic() - started < HUNG_BOUND
    named = info.value.nodes
    assert {p.url for p in proxies} <= set(named)
    assert {named[p.url].state for p in proxies} == {NodeState.UNAVAILABLE}


async def test_two_hung_nodes_with_threshold_one_still_serve(cluster: Cluster) -> None:
    """N - M = 2 hung nodes (1 of 3): reads and writes finish within the bound."""
    profile, laptop, first, proxies = await _world(cluster, (0, 1), threshold=1)
    for proxy in proxies:
        proxy.hang = True
    async with Statecache(profile, clock=cluster.clock) as admin:
        updates = bump(first)
        assert await _timed(admin.publish(updates)) < HUNG_BOUND
    async with Statecache(laptop, clock=cluster.clock) as lap:
        got: list = []

        async def run() -> None:
            got.extend(await collect(lap.onboard()))

        assert await _timed(run()) < HUNG_BOUND
        assert as_latest(got) == latest(updates)
        assert {lap.report.nodes[p.url].state for p in proxies} == {NodeState.UNAVAILABLE}


async def test_pages_stop_at_the_nodes_data_budget(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node ends a page once it holds `MAX_PAGE_DATA_BYTES` of sealed data (one item at
    least), so an answer stays under the device's cap; the device pages on, in both
    directions, and the cursors obey the paging rules."""
    from cache_service.protocol import models

    monkeypatch.setattr(models, "MAX_PAGE_DATA_BYTES", 500)  # snapshots here: 300-450 B
    profile, laptop, first, _ = await _world(cluster, ())
    async with cluster.statecache(laptop) as lap:
        assert as_latest(await collect(lap.onboard())) == latest(first)
        page = await lap.nodes[0].list_snapshots(order="desc", limit=100)
        assert len(page.items) == 1 and page.next_cursor == page.items[0].seq
        updates = bump(first)
        async with cluster.statecache(profile) as admin:
            await admin.publish(updates)
        assert as_latest(await collect(lap.sync())) == latest(updates)
        assert lap.report.suspects == {}


async def test_a_read_left_early_leaves_no_deadline_behind(cluster: Cluster) -> None:
    """Each call has its own deadline. A caller that stops iterating a read early, then
    publishes after the read's deadline would have passed, is not refused for it."""
    _, laptop, first, _ = await _world(cluster, ())
    policy = replace(POLICY, command_timeout=1.0)
    async with Statecache(laptop, clock=cluster.clock, policy=policy) as lap:
        async for _ in lap.onboard():
            break
        await asyncio.sleep(1.2)
        report = await lap.publish(bump(first[:1], 5))
        assert report.stored == 1
        assert {o.state for o in lap.outcomes.values()} == {NodeState.OK}


async def test_a_command_past_its_deadline_fails_naming_the_nodes(cluster: Cluster) -> None:
    """`command_timeout` bounds a whole call: a node that hangs past it ends the call with
    `ThresholdNotMet`, the hung node named, instead of waiting for its own timeouts."""
    _, laptop, _, [proxy] = await _world(cluster, (1,))
    proxy.hang = True
    slow = replace(POLICY, timeout=30.0, idle_timeout=30.0, command_timeout=1.0)
    async with Statecache(laptop, clock=cluster.clock, policy=slow) as lap:
        started = time.monotonic()
        with pytest.raises(ThresholdNotMet) as info:
            await collect(lap.onboard())
        assert time.monotonic() - started < HUNG_BOUND
    assert info.value.nodes[proxy.url].state is NodeState.UNAVAILABLE


async def test_a_node_posing_as_another_at_first_contact_is_refused(cluster: Cluster) -> None:
    """A device with no pinned keys meets node 1 showing node 2's key (and relaying to
    node 2): both positions showing one key are refused, so no request signed for node 2
    is ever handed to node 1; with M = 2 the read then fails closed, naming both."""
    _, laptop, _, [proxy] = await _world(cluster, (0,))
    assert not laptop.node_keys
    proxy.upstream, proxy.pose_as_share = cluster.urls[1], 1
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(ThresholdNotMet) as info:
            await collect(lap.onboard())
        assert proxy.tampered
    named = info.value.nodes
    assert named[proxy.url].state is NodeState.SUSPECT
    assert named[cluster.urls[1]].state is NodeState.SUSPECT
    assert proxy.url not in laptop.node_keys or laptop.node_keys[proxy.url] != (
        laptop.node_keys.get(cluster.urls[1])
    )


async def test_a_node_that_drops_connections_before_the_idle_timeout_costs_once(
    cluster: Cluster,
) -> None:
    """Dropping each connection just before the idle timeout is no timeout, but once every
    attempt failed the node is not asked again in the command."""
    _, laptop, first, [proxy] = await _world(cluster, (0,))
    async with cluster.statecache(laptop) as lap:
        await lap.pin_nodes()
    proxy.close_after = 0.9
    policy = replace(POLICY, idle_timeout=1.0, attempts=3, base_delay=0.01)
    async with Statecache(laptop, clock=cluster.clock, policy=policy) as lap:
        started = time.monotonic()
        got = await collect(lap.onboard())
        took = time.monotonic() - started
        assert as_latest(got) == latest(first)
        assert lap.report.nodes[proxy.url].state is NodeState.UNAVAILABLE
    assert proxy.tampered <= 2 * policy.attempts, proxy.tampered  # not once per request
    assert took < HUNG_BOUND
