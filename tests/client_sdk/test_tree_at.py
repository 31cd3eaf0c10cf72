"""Trees for Welcomes: `Statecache.tree_at` / `trees_at` give a group's verified ratchet
tree at exactly one MLS epoch, from the tree the device holds or from the nodes' chains,
against real nodes; a lying node is passed over and named; an epoch the nodes do not
serve is a clear `TreeUnavailable`."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from client_sdk import NodeState, ThresholdNotMet, TreeInput, TreePolicy, TreeUnavailable
from client_sdk.keystore import Profile
from client_sdk.mls import RatchetTree, tree_hash
from client_sdk.mls.synthetic import SyntheticGroup
from client_sdk.tree_sync import PATCH_KIND
from tests.client_sdk.conftest import POLICY as RETRY
from tests.client_sdk.conftest import Cluster, collect
from tests.client_sdk.malicious_proxy import Item, MaliciousProxy

# At most two patches, then a base: B1 p2 p3 B4 p5 p6 B7 p8 p9.
POLICY = TreePolicy(max_patches=2)
EPOCHS = 9

Trees = dict[int, dict[bytes, RatchetTree]]  # epoch -> group id -> the tree published


def synthetic(name: str, n_members: int = 40) -> SyntheticGroup:
    group_id = hashlib.sha256(name.encode()).digest()[:16]
    return SyntheticGroup.create(
        n_members, blank_ratio=0.2, rng=random.Random(name), group_id=group_id
    )


async def keep_tree_bases(cluster: Cluster, bases: int) -> None:
    """Restart the nodes so each keeps `bases` ratchet_tree snapshots per group."""
    for node in cluster.nodes:
        await node.stop()
        node.settings = {"retain": {"group_state": 1, "ratchet_tree": bases}}
        await node.start()


async def publish_chain(
    cluster: Cluster, urls: list[str] | None = None, *, groups: int = 1
) -> tuple[Profile, list[SyntheticGroup], Trees]:
    """An admin publishes `groups` groups' trees at epochs 1-9 (bases and patches) and
    approves a laptop: (the laptop's profile, the groups, every epoch's trees)."""
    profile = await cluster.account(urls)
    made = [synthetic(f"welcome {i}") for i in range(groups)]
    trees: Trees = {}
    async with cluster.statecache(profile, tree_policy=POLICY) as admin:
        kinds = ""
        for epoch in range(1, EPOCHS + 1):
            for s in made if epoch > 1 else ():
                s.commit()
            trees[epoch] = {s.group_id: s.tree for s in made}
            report = await admin.publish(
                [TreeInput(s.group_id, epoch, s.tree, s.suite) for s in made]
            )
            kinds += "B" if report.tree_bases else "p"
        assert kinds == "BppBppBpp"
        laptop = await cluster.enrol(admin)
    return laptop, made, trees


def check(got: bytes, expected: RatchetTree, s: SyntheticGroup) -> None:
    """The RFC 9420 encoding of the published tree, whose hash is that tree's."""
    assert got == expected.to_bytes()
    assert tree_hash(RatchetTree.from_bytes(got), s.suite) == tree_hash(expected, s.suite)


async def test_tree_at_the_newest_and_a_late_welcomes_epoch(cluster: Cluster) -> None:
    await keep_tree_bases(cluster, 2)  # bases 4 and 7 stay, with the patches above 4
    laptop, [s], trees = await publish_chain(cluster)
    g = s.group_id
    async with cluster.statecache(laptop) as lap:
        check(await lap.tree_at(g, 9), trees[9][g], s)  # a Welcome of the newest epoch
        assert lap.outcomes and all(o.state is NodeState.OK for o in lap.outcomes.values())
        # late Welcomes: a patch, the newest base, patches on the older base, that base
        for epoch in (8, 7, 6, 5, 4):
            check(await lap.tree_at(g, epoch), trees[epoch][g], s)
        assert lap.trees() == {}  # what the device holds and knows is unchanged
        assert lap.state.known == {}

        with pytest.raises(TreeUnavailable) as beyond:
            await lap.tree_at(g, 10)
        assert "newest is epoch 9: not published yet, retry later" in str(beyond.value)
        assert (beyond.value.group_id, beyond.value.mls_epoch) == (g, 10)
        assert g.hex() in str(beyond.value) and "epoch 10" in str(beyond.value)

        with pytest.raises(TreeUnavailable) as below:
            await lap.tree_at(g, 1)
        assert "trees from epoch 4 on: it is older than the window kept" in str(below.value)
        assert (below.value.newest, below.value.oldest) == (9, 4)

        with pytest.raises(TreeUnavailable, match="none published yet"):
            await lap.tree_at(b"never published", 1)


async def test_the_publisher_holds_its_newest_tree_and_asks_no_node(cluster: Cluster) -> None:
    profile = await cluster.account()
    s = synthetic("held")
    async with cluster.statecache(profile, tree_policy=POLICY) as admin:
        first = s.tree
        await admin.publish_tree(s.group_id, 3, first, s.suite)
        before = admin.bytes_received
        check(await admin.tree_at(s.group_id, 3), s.tree, s)
        assert admin.bytes_received == before and admin.outcomes == {}
        s.commit()
        held = s.tree
        await admin.publish_tree(s.group_id, 4, held, s.suite)
        # an older epoch than the one held: from the nodes (the base of epoch 3 is gone)
        with pytest.raises(TreeUnavailable, match="older than the window"):
            await admin.tree_at(s.group_id, 2)
        check(await admin.tree_at(s.group_id, 4), held, s)
        check(await admin.tree_at(s.group_id, 3), first, s)


def stale(item: Item) -> bool:
    return bool(item["mls_epoch"] > 7)


def without_patch_8(item: Item) -> bool:
    return bool(item["kind"] == PATCH_KIND and item["mls_epoch"] == 8)


def forge(proxy: MaliciousProxy) -> None:
    proxy.swap_ciphertexts = True  # each piece's signed header over another's ciphertext


def serve_stale(proxy: MaliciousProxy) -> None:
    proxy.drop = stale  # an old chain: nothing above epoch 7


def leave_out_a_patch(proxy: MaliciousProxy) -> None:
    proxy.drop = without_patch_8


def hang(proxy: MaliciousProxy) -> None:
    proxy.hang = True


@pytest.mark.parametrize(
    ("attack", "named"),
    [
        (serve_stale, NodeState.BEHIND),
        (leave_out_a_patch, NodeState.BEHIND),
        (forge, NodeState.SUSPECT),
        (hang, NodeState.UNAVAILABLE),
    ],
)
async def test_a_lying_node_is_passed_over_and_named(
    cluster: Cluster, attack: Callable[[MaliciousProxy], None], named: NodeState
) -> None:
    proxy = await cluster.proxy(0)  # the first node asked
    laptop, [s], trees = await publish_chain(cluster, [proxy.url, *cluster.urls[1:]])
    attack(proxy)
    async with cluster.statecache(laptop) as lap:
        check(await lap.tree_at(s.group_id, 9), trees[9][s.group_id], s)
        assert proxy.tampered or proxy.hanging
        assert lap.outcomes[proxy.url].state is named
        assert all(lap.outcomes[url].state is NodeState.OK for url in cluster.urls[1:2])


async def test_no_tree_when_every_node_leaves_a_patch_out(cluster: Cluster) -> None:
    proxies = [await cluster.proxy(i) for i in range(3)]
    laptop, [s], _ = await publish_chain(cluster, [p.url for p in proxies])
    for proxy in proxies:
        proxy.drop = without_patch_8
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(TreeUnavailable, match="no piece of that epoch"):
            await lap.tree_at(s.group_id, 8)
        with pytest.raises(TreeUnavailable, match="incomplete on every node"):
            await lap.tree_at(s.group_id, 9)  # never made up from a broken chain


async def test_trees_at_after_onboarding_asks_no_node_for_held_trees(cluster: Cluster) -> None:
    laptop, made, trees = await publish_chain(cluster, groups=12)
    newest = {s.group_id: EPOCHS for s in made}
    async with cluster.statecache(laptop) as lap:
        await collect(lap.onboard())  # type: ignore[arg-type]
        assert set(lap.trees()) == set(newest)
        before = lap.bytes_received
        got = await lap.trees_at(newest)
        assert lap.bytes_received == before and lap.outcomes == {}
        for s in made:
            check(got[s.group_id], trees[EPOCHS][s.group_id], s)

        # one group's Welcome is older: only that group is fetched
        late = made[0].group_id
        got = await lap.trees_at({**newest, late: 8})
        assert got[late] == trees[8][late].to_bytes()
        assert got[made[1].group_id] == trees[EPOCHS][made[1].group_id].to_bytes()
        one = lap.bytes_received - before
        before = lap.bytes_received
        await lap.trees_at(dict.fromkeys(newest, 8))  # every group fetched
        assert 0 < one < (lap.bytes_received - before) / 4

        # a group no node serves at its epoch: the others come with the error
        with pytest.raises(TreeUnavailable, match="and 1 more groups") as missing:
            await lap.trees_at({**newest, late: 10, made[1].group_id: 11})
        assert missing.value.missing == {late: 10, made[1].group_id: 11}
        assert set(missing.value.available) == set(newest) - {late, made[1].group_id}


async def test_trees_at_for_a_device_holding_no_tree(cluster: Cluster) -> None:
    await keep_tree_bases(cluster, 2)
    laptop, made, trees = await publish_chain(cluster, groups=12)
    async with cluster.statecache(laptop) as lap:
        wanted = {s.group_id: (4, 7, 8, 9)[i % 4] for i, s in enumerate(made)}
        got = await lap.trees_at(wanted)
        for s in made:
            check(got[s.group_id], trees[wanted[s.group_id]][s.group_id], s)
        assert all(o.state is NodeState.OK for o in lap.outcomes.values())
        assert await lap.trees_at({}) == {}


async def test_a_caller_mistake_is_not_a_tree_error(cluster: Cluster) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as sc:
        with pytest.raises(ValueError, match="MLS epoch"):
            await sc.tree_at(b"g", -1)
        with pytest.raises(TypeError):
            await sc.tree_at("g", 1)  # type: ignore[arg-type]


async def test_a_piece_fewer_than_m_nodes_confirm_is_no_tree(cluster: Cluster) -> None:
    """Epoch 10's patch reached one node only (the publish failed): that node alone, as a
    liar could, serves it; the tree of epoch 10 is not published yet."""
    laptop, [s], _ = await publish_chain(cluster)
    async with cluster.statecache(laptop) as lap:  # any approved device may publish a tree
        await lap.load_keys()
        for node in cluster.nodes[1:]:
            await node.stop()
        s.commit()
        with pytest.raises(ThresholdNotMet):
            await lap.publish_tree(s.group_id, 10, s.tree, s.suite)
    for node in cluster.nodes[1:]:
        await node.start()
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(TreeUnavailable, match="newest is epoch 9: not published yet"):
            await lap.tree_at(s.group_id, 10)
        page = await lap.nodes[0].list_snapshots(group_id=s.group_id)
        assert any(i.mls_epoch == 10 for i in page.items)  # served, not confirmed


def strip_base_7(item: Item) -> bool:
    """Leaves base 7 in the listing without the receipts that confirm it."""
    if item["kind"] != PATCH_KIND and item["mls_epoch"] == 7:
        item["receipts"] = []
    return False


@pytest.mark.parametrize("claimed", [0, 100])
async def test_a_node_claiming_newer_bases_or_hiding_receipts_moves_no_tree(
    cluster: Cluster, claimed: int
) -> None:
    """The first node read lists a newer base of every group than it serves (unsigned),
    or serves its base of epoch 7 unconfirmed: a read and tree_at still rebuild the
    published trees from confirmed pieces; its chain alone falls short (behind)."""
    await keep_tree_bases(cluster, 2)
    liar = await cluster.proxy(0)
    laptop, [s], trees = await publish_chain(cluster, [liar.url, *cluster.urls[1:]])
    g = s.group_id
    liar.inflate_epochs = claimed
    liar.drop = strip_base_7
    async with cluster.statecache(laptop) as lap:
        for epoch in (9, 8, 7):
            check(await lap.tree_at(g, epoch), trees[epoch][g], s)
        assert lap.outcomes[liar.url].state is NodeState.BEHIND
        opened = await collect(lap.onboard())  # type: ignore[arg-type]
        assert liar.tampered
        assert lap.trees()[g] == trees[9][g]
        assert [(o.group_id, o.mls_epoch) for o in opened] == [(g, 9)]
        assert lap.report.complete, lap.report.incomplete


async def test_a_node_paging_forever_is_asked_for_one_group_not_each(cluster: Cluster) -> None:
    """The first node pages a group's chain forever (empty pages, a creeping cursor): cut
    off at `max_pages` and a suspect, it is not asked again for the other groups of the
    call, so it cannot spend the call's deadline one group at a time."""
    liar = await cluster.proxy(0)
    laptop, made, trees = await publish_chain(cluster, [liar.url, *cluster.urls[1:]], groups=20)
    liar.endless = "forever"
    policy = replace(RETRY, max_pages=40)
    async with cluster.statecache(laptop, policy=policy) as lap:
        got = await lap.trees_at({s.group_id: EPOCHS for s in made})
        for s in made:
            check(got[s.group_id], trees[EPOCHS][s.group_id], s)
        assert lap.outcomes[liar.url].state is NodeState.SUSPECT
        # at most the groups asked at once met it before it was found out
        assert liar.tampered <= 8 * 40 + 8, liar.tampered
