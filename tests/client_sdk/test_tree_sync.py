"""Ratchet trees as a base and patches: diff/apply round trips, a strict patch encoding,
the hash chain, the rebase policy, and, against real nodes, onboarding and sync rebuilding
the publisher's trees and refusing any tree that does not match a hash it must match."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import commands
from client_sdk.commands import Context
from client_sdk.device import OpenedTree, SnapshotInput, TreeInput
from client_sdk.errors import ForkError, TreeMismatch
from client_sdk.home import Home
from client_sdk.mls import MlsDecodeError, RatchetTree, tree_hash, tree_hashes
from client_sdk.mls.codec import Writer
from client_sdk.mls.synthetic import SyntheticGroup
from client_sdk.tree_sync import (
    BASE_KIND,
    MAX_PATCHES,
    PATCH_KIND,
    HashedTree,
    TreePatch,
    TreePiece,
    TreePolicy,
    apply,
    diff,
    plan,
    rebuild,
)
from client_sdk.trees import Pieces, add_pieces
from client_sdk.verify import Commitments
from tests.client_sdk.conftest import Cluster, collect

SUITE = 1


def evolve(group: SyntheticGroup, rng: random.Random, op: str) -> None:
    if op == "remove" and len(group.members()) > 1:
        group.remove()
    elif op == "add":
        group.add()
    else:
        group.commit()


def group_of(n_members: int, seed: int, group_id: bytes = b"g") -> SyntheticGroup:
    return SyntheticGroup.create(
        n_members, blank_ratio=0.2, rng=random.Random(seed), group_id=group_id
    )


# diff and apply


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n_members=st.integers(1, 40),
    ops=st.lists(st.sampled_from(["update", "add", "remove"]), min_size=1, max_size=8),
)
def test_diff_then_apply_gives_the_new_tree_and_its_hashes(
    seed: int, n_members: int, ops: list[str]
) -> None:
    rng = random.Random(seed)
    group = group_of(n_members, seed)
    old = HashedTree.of(group.tree, SUITE)
    for op in ops:
        evolve(group, rng, op)
        new_tree = group.tree
        patch = diff(old, new_tree)
        assert TreePatch.from_bytes(patch.to_bytes()) == patch
        new = apply(old, patch)
        assert new.tree == new_tree
        # incremental hashes and sizes are the ones a full computation gives
        assert new.tree_hash == tree_hash(new_tree, group.suite)
        assert new._hashes == tree_hashes(new_tree, group.suite)
        assert new.encoded_size() == len(new_tree.to_bytes())
        old = new


def test_a_patch_carries_only_the_changed_nodes() -> None:
    group = group_of(1000, 1)
    old = HashedTree.of(group.tree, SUITE)
    old.encoded_size()
    group.commit()
    patch = diff(old, group.tree)
    # a commit changes the committer's leaf and its direct path: about log2(n) nodes
    assert 1 < len(patch.changes) <= 12
    assert len(patch.to_bytes()) < 0.01 * old.encoded_size()
    assert diff(old, old.tree).changes == ()  # nothing changed: an empty patch


def test_apply_refuses_a_patch_for_another_tree() -> None:
    group = group_of(20, 2)
    first = HashedTree.of(group.tree, SUITE)
    group.commit()
    second = apply(first, diff(first, group.tree))
    group.commit()
    patch = diff(second, group.tree)
    with pytest.raises(TreeMismatch, match="another tree"):
        apply(first, patch)  # the chain is broken: the patch names `second`


def test_apply_refuses_a_malformed_or_untruncated_result() -> None:
    group = group_of(8, 3)
    old = HashedTree.of(group.tree, SUITE)
    leaf = old.tree.nodes[0]
    width = len(old.tree.nodes)
    with pytest.raises(TreeMismatch, match="malformed"):  # a leaf at a parent position
        apply(old, TreePatch(old.tree_hash, width, ((1, leaf),)))
    blank_right = tuple((x, None) for x in range(width // 2 + 1, width))
    with pytest.raises(TreeMismatch, match="truncated"):
        apply(old, TreePatch(old.tree_hash, width, blank_right))
    with pytest.raises(ValueError, match="truncated"):  # the publisher's own mistake
        diff(old, RatchetTree((*old.tree.nodes, *([None] * (width + 1)))))


def test_patch_encoding_is_strict() -> None:
    group = group_of(10, 4)
    old = HashedTree.of(group.tree, SUITE)
    group.commit()
    data = diff(old, group.tree).to_bytes()
    for bad in (
        data + b"\x00",  # trailing bytes
        b"\x02" + data[1:],  # another format version
        data[:-1],  # truncated
    ):
        with pytest.raises(MlsDecodeError):
            TreePatch.from_bytes(bad)
    bad_shapes = (
        (6, [1]),  # not a complete tree
        (7, [3, 3]),  # an index twice
        (7, [3, 1]),  # indices out of order
        (7, [7]),  # outside the tree
        ((1 << 22) - 1, [1]),  # wider than a patch may make
    )
    for n_nodes, indices in bad_shapes:
        with pytest.raises(ValueError):
            TreePatch(old.tree_hash, n_nodes, tuple((x, None) for x in indices))
        with pytest.raises(MlsDecodeError):  # the same on the wire: a decode error
            TreePatch.from_bytes(raw_patch(old.tree_hash, n_nodes, indices))
    assert TreePatch.from_bytes(raw_patch(old.tree_hash, 7, [1, 3])).n_nodes == 7


def raw_patch(previous: bytes, n_nodes: int, indices: list[int]) -> bytes:
    """A patch encoding with any fields, each changed node made blank."""
    w = Writer()
    w.u8(1)
    w.opaque(previous)
    w.u32(n_nodes)

    def blank(iw: Writer, x: int) -> None:
        iw.u32(x)
        iw.u8(0)

    w.vector(indices, blank)
    return w.getvalue()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_only_a_decode_error(data: bytes) -> None:
    try:
        patch = TreePatch.from_bytes(data)
    except MlsDecodeError:
        return
    assert patch.to_bytes() == data


# the hash chain and the rebase policy


def chain(group: SyntheticGroup, epochs: int, policy: TreePolicy) -> list[TreePiece]:
    rng = random.Random(5)
    _, data, current = plan(None, 1, group.tree, group.suite, policy)
    pieces = [TreePiece(1, BASE_KIND, current.tree.tree_hash, data)]
    for epoch in range(2, epochs + 2):
        evolve(group, rng, rng.choice(["update", "update", "add", "remove"]))
        kind, data, current = plan(current, epoch, group.tree, group.suite, policy)
        pieces.append(TreePiece(epoch, kind, current.tree.tree_hash, data))
    return pieces


def test_rebuild_follows_the_hash_chain_in_any_order() -> None:
    group = group_of(50, 6)
    pieces = chain(group, 12, TreePolicy(rebase_ratio=10.0))
    assert [p.kind for p in pieces] == [BASE_KIND] + [PATCH_KIND] * 12
    version = rebuild(reversed(pieces))  # as a newest-first onboarding collects them
    assert (version.mls_epoch, version.tree.tree) == (13, group.tree)
    assert (version.base_epoch, version.chain_length) == (1, 12)
    # from a tree held already, only the newer pieces matter
    middle = rebuild(pieces[:6])
    assert rebuild(pieces[6:], middle).tree.tree == group.tree


def test_rebuild_refuses_a_broken_chain_or_a_wrong_tree_hash() -> None:
    group = group_of(30, 7)
    pieces = chain(group, 6, TreePolicy(rebase_ratio=10.0))
    with pytest.raises(TreeMismatch, match="not held"):  # a patch left out
        rebuild(pieces[:3] + pieces[4:])
    with pytest.raises(TreeMismatch, match="base is missing"):
        rebuild(pieces[1:])
    lying = TreePiece(pieces[4].mls_epoch, PATCH_KIND, bytes(32), pieces[4].plaintext)
    with pytest.raises(TreeMismatch, match="differs from its tree hash"):
        rebuild([*pieces[:4], lying, *pieces[5:]])
    bad_base = TreePiece(1, BASE_KIND, pieces[0].tree_hash, b"\x00")
    with pytest.raises(TreeMismatch, match="does not decode"):
        rebuild([bad_base, *pieces[1:]])


def test_two_patches_from_one_tree_both_apply() -> None:
    """Two devices that published from the same tree: each patch names it, and the chain
    still rebuilds, to the newer epoch's tree."""
    group = group_of(20, 8)
    _, data, base = plan(None, 1, group.tree, SUITE, TreePolicy())
    other = group.copy(random.Random(1))
    group.commit()
    other.commit()
    _, data2, v2 = plan(base, 2, group.tree, SUITE, TreePolicy())
    _, data3, v3 = plan(base, 3, other.tree, SUITE, TreePolicy())
    pieces = [
        TreePiece(1, BASE_KIND, base.tree.tree_hash, data),
        TreePiece(2, PATCH_KIND, v2.tree.tree_hash, data2),
        TreePiece(3, PATCH_KIND, v3.tree.tree_hash, data3),
    ]
    assert rebuild(pieces).tree.tree == other.tree


def test_a_new_base_when_the_chain_outgrows_the_tree() -> None:
    group = group_of(200, 9)
    ratio = 0.05
    pieces = chain(group, 40, TreePolicy(rebase_ratio=ratio))
    kinds = [p.kind for p in pieces]
    assert kinds.count(BASE_KIND) > 1  # rebased along the way
    size = len(group.tree.to_bytes())
    run: list[int] = []
    for piece in pieces:  # the patches since a base never add up past the ratio
        run = [] if piece.kind == BASE_KIND else [*run, len(piece.plaintext)]
        assert sum(run) <= ratio * size * 1.1
    assert rebuild(pieces).tree.tree == group.tree
    # and a bound on the number of patches: three, then a new base
    pieces = chain(group_of(200, 9), 10, TreePolicy(max_patches=3))
    assert "".join("B" if p.kind == BASE_KIND else "p" for p in pieces) == "BpppBpppBpp"
    # a two-member group's commit changes half its tree: always a new base
    pair = group_of(2, 10)
    _, _, version = plan(None, 1, pair.tree, SUITE, TreePolicy())
    for epoch in range(2, 6):
        pair.commit()
        kind, _, version = plan(version, epoch, pair.tree, SUITE, TreePolicy())
        assert kind == BASE_KIND


# against real nodes


def tree_group(name: str, n_members: int) -> tuple[bytes, SyntheticGroup]:
    group_id = hashlib.sha256(name.encode()).digest()[:16]
    return group_id, group_of(n_members, n_members, group_id)


def trees_of(opened: list[object]) -> dict[bytes, OpenedTree]:
    return {t.group_id: t for t in opened if isinstance(t, OpenedTree)}


async def test_onboarding_and_sync_rebuild_the_publishers_trees(cluster: Cluster) -> None:
    profile = await cluster.account()
    groups = dict(tree_group(f"t{i}", n) for i, n in enumerate((2, 40, 150)))
    async with cluster.statecache(profile) as admin:
        first = [TreeInput(g, 5, s.tree, s.suite) for g, s in groups.items()]
        state = SnapshotInput(next(iter(groups)), "group_state", 5, b"state")
        report = await admin.publish([*first, state])
        assert (report.stored, report.tree_bases, report.tree_patches) == (4, 3, 0)
        # the same tree at the same epoch again: a duplicate, not sent
        assert (await admin.publish(first[:1])).duplicates == 1
        laptop = await cluster.enrol(admin)

        async with cluster.statecache(laptop) as lap:
            opened = await collect(lap.onboard())
            trees = trees_of(opened)
            assert {g: t.tree for g, t in trees.items()} == {g: s.tree for g, s in groups.items()}
            assert all((t.mls_epoch, t.patches, t.kind) == (5, 0, BASE_KIND)
                       for t in trees.values())  # fmt: skip
            assert [s.kind for s in opened if not isinstance(s, OpenedTree)] == ["group_state"]
            assert lap.report.trees == 3 and not lap.report.suspects
            assert set(lap.tree_health()) == set(groups)

            # two epochs of commits: patches, applied by the laptop's sync
            for epoch in (6, 7):
                for s in groups.values():
                    s.commit()
                report = await admin.publish(
                    [TreeInput(g, epoch, s.tree, s.suite) for g, s in groups.items()]
                )
                assert report.tree_patches == 2 and report.tree_bases == 1  # 2 members: base
                assert report.tree_patch_bytes < report.tree_patched_bytes / 10
            synced = trees_of(await collect(lap.sync()))
            assert {g: t.tree for g, t in synced.items()} == {g: s.tree for g, s in groups.items()}
            assert sorted(t.patches for t in synced.values()) == [0, 2, 2]
            for g, t in synced.items():
                assert t.tree_hash == tree_hash(groups[g].tree, groups[g].suite)
                assert t.header.tree_hash == t.tree_hash
            assert await collect(lap.sync()) == []  # nothing new

        # a new process holds no tree: a patch makes it fetch the group's whole chain
        for s in groups.values():
            s.commit()
        await admin.publish([TreeInput(g, 8, s.tree, s.suite) for g, s in groups.items()])
        async with cluster.statecache(laptop, state=lap.state) as fresh:
            synced = trees_of(await collect(fresh.sync()))
            assert {g: t.tree for g, t in synced.items()} == {g: s.tree for g, s in groups.items()}
            assert fresh.trees() == {g: s.tree for g, s in groups.items()}
            assert not fresh.report.suspects


async def test_the_callers_tree_hash_is_checked(cluster: Cluster) -> None:
    profile = await cluster.account()
    group_id, group = tree_group("committed", 30)
    async with cluster.statecache(profile) as admin:
        await admin.publish_tree(group_id, 4, group.tree, group.suite)
        group.commit()
        await admin.publish_tree(group_id, 5, group.tree, group.suite)
        laptop = await cluster.enrol(admin)
    right = tree_hash(group.tree, group.suite)
    for commitment in (
        Commitments(min_epoch=5, tree_hash=right),
        Commitments(min_epoch=4, tree_hash=bytes(32)),  # an older epoch: not compared
    ):
        async with cluster.statecache(laptop) as lap:
            trees = trees_of(await collect(lap.onboard(commitments={group_id: commitment})))
            assert trees[group_id].tree == group.tree
    async with cluster.statecache(laptop) as lap:
        wrong = Commitments(min_epoch=5, tree_hash=hashlib.sha256(b"another").digest())
        with pytest.raises(TreeMismatch, match="group's tree hash"):
            await collect(lap.onboard(commitments={group_id: wrong}))
        assert lap.trees() == {}


async def test_a_patch_whose_tree_differs_from_its_signed_hash_is_refused(
    cluster: Cluster,
) -> None:
    """A buggy (or hostile) device of the account signs a patch whose tree is not the one
    its header names: no reader accepts the tree, whichever node serves it."""
    profile = await cluster.account()
    group_id, group = tree_group("lying", 30)
    async with cluster.statecache(profile) as admin:
        await admin.publish_tree(group_id, 1, group.tree, group.suite)
        base = admin._trees.get(group_id)
        assert base is not None
        group.commit()
        patch = diff(base.tree, group.tree)
        await admin.publish(
            [SnapshotInput(group_id, PATCH_KIND, 2, patch.to_bytes(), tree_hash=bytes(32))]
        )
        laptop = await cluster.enrol(admin)
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(TreeMismatch, match="differs from its tree hash"):
            await collect(lap.onboard())


async def test_a_node_leaving_out_a_patch_or_rolling_back_is_bypassed(cluster: Cluster) -> None:
    proxy = await cluster.proxy(0)
    urls = [proxy.url, *cluster.urls[1:]]
    profile = await cluster.account(urls)
    group_id, group = tree_group("gappy", 60)
    async with cluster.statecache(profile) as admin:
        for epoch in range(1, 6):
            group_tree = group.tree
            await admin.publish_tree(group_id, epoch, group_tree, group.suite)
            group.commit()
        laptop = await cluster.enrol(admin)

    # the proxied node leaves out the patch of epoch 3: its chain is broken
    proxy.drop = lambda item: item["kind"] == PATCH_KIND and item["mls_epoch"] == 3
    async with cluster.statecache(laptop) as lap:
        trees = trees_of(await collect(lap.onboard()))
        assert proxy.tampered
        assert trees[group_id].mls_epoch == 5 and trees[group_id].patches == 4

        assert trees[group_id].tree == group_tree
        # named by the cross-check (it left the patch out) or by the chain rebuild
        assert any(w in lap.report.suspects[proxy.url] for w in ("left out", "tree chain"))

    # it serves old patches in place of new ones: the second node's listing tells
    proxy.drop = None
    proxy.roll_back = True
    async with cluster.statecache(laptop) as lap:
        trees = trees_of(await collect(lap.onboard()))
        assert trees[group_id].tree == group_tree
        assert proxy.url in lap.report.suspects


async def test_no_tree_is_made_up_when_every_node_leaves_a_patch_out(cluster: Cluster) -> None:
    proxies = [await cluster.proxy(i) for i in range(3)]
    profile = await cluster.account([p.url for p in proxies])
    group_id, group = tree_group("gappy everywhere", 20)
    async with cluster.statecache(profile) as admin:
        for epoch in range(1, 4):
            await admin.publish_tree(group_id, epoch, group.tree, group.suite)
            group.commit()
        laptop = await cluster.enrol(admin)
    for proxy in proxies:
        proxy.drop = lambda item: item["kind"] == PATCH_KIND and item["mls_epoch"] == 2
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(TreeMismatch, match="not held"):
            await collect(lap.onboard())
        assert lap.trees() == {}


async def test_a_new_base_when_the_chain_grows_and_readers_skip_the_kept_window(
    cluster: Cluster,
) -> None:
    profile = await cluster.account()
    group_id, group = tree_group("rebasing", 100)
    policy = TreePolicy(rebase_ratio=0.1)
    async with cluster.statecache(profile, tree_policy=policy) as admin:
        kinds = []
        for epoch in range(1, 15):
            report = await admin.publish_tree(group_id, epoch, group.tree, group.suite)
            kinds.append(BASE_KIND if report.tree_bases else PATCH_KIND)
            group.commit()
        laptop = await cluster.enrol(admin)
        last_base = max(i for i, k in enumerate(kinds, start=1) if k == BASE_KIND)
        assert 1 < kinds.count(BASE_KIND) <= 8
        page = await admin.nodes[0].list_snapshots(group_id=group_id, limit=500)
        listed = sorted((i.kind, i.mls_epoch) for i in page.items)
        # nodes keep a window of 8 bases: every base and patch, for Welcomes of old epochs
        assert listed == sorted((k, e) for e, k in enumerate(kinds, start=1))
    async with cluster.statecache(laptop) as lap:
        trees = trees_of(await collect(lap.onboard()))
        assert trees[group_id].base_epoch == last_base
        assert trees[group_id].mls_epoch == 14
        # the older bases and patches kept are history: not opened, nobody blamed
        assert lap.report.opened == 1 + (14 - last_base)
        assert not lap.report.suspects
    async with cluster.statecache(laptop) as fresh:  # the same, oldest first
        trees = trees_of(await collect(fresh.sync()))
        assert (trees[group_id].base_epoch, trees[group_id].mls_epoch) == (last_base, 14)
        assert fresh.report.opened == 1 + (14 - last_base)
        assert not fresh.report.suspects


async def test_the_command_line_writes_rebuilt_trees(cluster: Cluster, tmp_path: Path) -> None:
    profile = await cluster.account()
    group_id, group = tree_group("cli", 25)
    async with cluster.statecache(profile) as admin:
        await admin.publish_tree(group_id, 1, group.tree, group.suite)
        group.commit()
        await admin.publish_tree(group_id, 2, group.tree, group.suite)
        laptop = await cluster.enrol(admin)
    home = Home(tmp_path / "home")
    home.ensure_new()
    home.save(laptop)
    out = tmp_path / "out"
    result = await commands.read_snapshots(Context(home), mode="onboard", out=out)
    assert result.fields["trees"] == 1
    written = out / group_id.hex() / "ratchet_tree.2.bin"  # the RFC 9420 encoding
    assert RatchetTree.from_bytes(written.read_bytes()) == group.tree
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["ratchet_tree.2.bin"]


def test_a_base_and_a_patch_making_two_trees_at_one_epoch_are_a_fork() -> None:
    """Two signed trees at one epoch, one a base and one a patch: a fork, in either order
    (the same tree as both is one publication)."""

    def piece(kind: str, tree_hash: bytes) -> Any:
        return SimpleNamespace(
            kind=kind, mls_epoch=5, digest=os.urandom(32), label="account",
            plaintext=os.urandom(8), header=SimpleNamespace(tree_hash=tree_hash),
        )  # fmt: skip

    same: Pieces = {}
    add_pieces(same, [piece(BASE_KIND, b"a" * 32), piece(PATCH_KIND, b"a" * 32)])
    assert len(same) == 2
    for first, second in ((BASE_KIND, PATCH_KIND), (PATCH_KIND, BASE_KIND)):
        pieces: Pieces = {}
        add_pieces(pieces, [piece(first, b"a" * 32)])
        with pytest.raises(ForkError, match="two trees"):
            add_pieces(pieces, [piece(second, b"b" * 32)])


def test_a_publisher_cannot_grow_chains_past_what_nodes_keep() -> None:
    assert TreePolicy(max_patches=MAX_PATCHES).max_patches == 500
    with pytest.raises(ValueError, match="max_patches"):
        TreePolicy(max_patches=MAX_PATCHES + 1)
