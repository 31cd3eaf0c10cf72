"""Threshold trust, part 3: reads that M - 1 lying nodes cannot fool, writes that retry
safely, and reads that say what they did not deliver.

A liar is either a `MaliciousProxy` in front of a node (it hides what it holds) or a node
whose storage the test writes to directly, with receipts signed by that node's own key
(a node that lies can sign anything, at any time it likes)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import pre
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.node_identity import load_or_create_identity
from cache_service.storage import RedisStorage, SnapshotWrite
from client_sdk.device import SnapshotInput, Statecache, create_account, enrollment_request
from client_sdk.errors import ContentConflict, ThresholdNotMet
from client_sdk.keystore import Profile
from tests.client_sdk.conftest import (
    POLICY,
    Clock,
    Cluster,
    Node,
    as_latest,
    collect,
)
from tests.client_sdk.malicious_proxy import MaliciousProxy

DAY = 86_400
GROUP = hashlib.sha256(b"confirmed-reads").digest()[:16]


def state(epoch: int, data: bytes | None = None) -> SnapshotInput:
    return SnapshotInput(GROUP, "group_state", epoch, data or os.urandom(64))


async def plant(node: Node, profile: Profile, snap: pre.SealedSnapshot, stored_at: int) -> None:
    """Store `snap` on `node` behind its back, with that node's receipt dated `stored_at`:
    what a lying node can do. (The author field only feeds the storage's revocation check,
    which a lying node skips too.)"""
    account = profile.account_id.hex()
    h = snap.header
    receipt = load_or_create_identity(node.data_dir).sign_snapshot_receipt(
        account_id=profile.account_id, digest=snap.digest, stored_at=stored_at
    )
    outcome = await node.storage.publish(
        account,
        SnapshotWrite(
            label=h.label, key_epoch=h.key_epoch, group_id=h.group_id, kind=h.kind,
            mls_epoch=h.mls_epoch, author="00" * 16, digest=snap.digest, data=snap.to_bytes(),
            retain=1, stored_at=stored_at, receipt=receipt.to_bytes(),
        ),
    )  # fmt: skip
    assert outcome.seq is not None, outcome


def forge(
    author: Profile, *, epoch: int, created_at: int, key_epoch: int = 0
) -> pre.SealedSnapshot:
    """A snapshot `author` signs (under a KEK it need not hold: the reader refuses it before
    opening it)."""
    kek = pre.Kek(author.account_id, "account", key_epoch, os.urandom(32))
    return pre.seal_snapshot(
        kek, author.device, group_id=GROUP, kind="group_state", mls_epoch=epoch,
        plaintext=b"forged", now=created_at,
    )  # fmt: skip


# M - 1 colluding nodes serving a stale view (N = 4 and 5, M = 3)


@pytest.fixture
async def wide(redis_servers: list[EmbeddedRedis], tmp_path: Path) -> AsyncIterator[list[Node]]:
    """Five in-process nodes over the session's Redis servers (Redis databases 1 and 2
    keep the positions that share a server apart)."""
    clock = Clock()
    nodes = [
        Node(
            index=i + 1,
            data_dir=tmp_path / f"wide{i + 1}",
            storage=RedisStorage(
                aioredis.Redis(
                    unix_socket_path=redis_servers[i % len(redis_servers)].socket,
                    db=1 + i // len(redis_servers),
                )
            ),
            clock=clock,
        )
        for i in range(5)
    ]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()
            await node.storage.close()


@pytest.mark.parametrize("n", [4, 5])
async def test_two_colluding_nodes_of_m_three_cannot_hold_back_a_fresh_device(
    wide: list[Node], n: int
) -> None:
    """Epoch 6 was acknowledged by nodes 1, 2 and 3 (the others were down). Nodes 1 and 2
    then lie: they list and serve only epoch 5. Node 3, the only honest node holding epoch
    6, proves it with the three receipts the publisher gave it, so a fresh device ends at
    epoch 6 and names node 1 for leaving it out. (Read-time agreement of M nodes could not:
    two of the three that hold it deny it.)"""
    nodes = wide[:n]
    clock = nodes[0].clock
    liars = [MaliciousProxy(node.url) for node in nodes[:2]]
    for liar in liars:
        await liar.start()
    urls = [liar.url for liar in liars] + [node.url for node in nodes[2:]]
    try:
        profile = await create_account(urls, 3, clock=clock, policy=POLICY)
        async with Statecache(profile, clock=clock, policy=POLICY) as admin:
            await admin.publish([state(5)])
            for node in nodes[3:]:
                await node.stop()
            epoch6 = state(6)
            await admin.publish([epoch6])
            for node in nodes[3:]:
                await node.start()
            laptop_keys, request = enrollment_request(
                "laptop",
                account_id=admin.profile.account_id,
                nodes=admin.profile.nodes,
                threshold=admin.profile.threshold,
            )
            await admin.approve(request)
        laptop = Profile(profile.account_id, laptop_keys, urls, 3)
        for liar in liars:
            liar.drop = lambda item: item["mls_epoch"] >= 6
        async with Statecache(laptop, clock=clock, policy=POLICY) as lap:
            got = as_latest(await collect(lap.onboard()))
            assert got[(GROUP, "group_state")] == (6, epoch6.plaintext)
            assert lap.report.nodes[liars[0].url].code is not None
            assert lap.state.known[(GROUP, "group_state")].mls_epoch == 6
    finally:
        for liar in liars:
            await liar.close()


# revoked, expired and future-dated authors, with one lying node (M = 2 of 3)


async def test_a_revoked_author_and_one_node_cannot_backdate_a_new_state(
    cluster: Cluster,
) -> None:
    """The revoked phone signs epoch 1005 dated before its revocation; node 1 stores it with
    a receipt it backdates too. One receipt is fewer than M: a fresh device keeps epoch 5,
    says the group is incomplete (naming node 1), and takes the admin's honest epoch 6
    later, which would otherwise have read as a rollback."""
    profile = await cluster.account()
    now = int(cluster.clock())
    async with cluster.statecache(profile) as admin:
        phone = await cluster.enrol(admin, "phone")
        async with cluster.statecache(phone) as ph:
            await ph.publish([state(5)])
        await admin.revoke(phone.device.device_id)
        laptop = await cluster.enrol(admin, "laptop")
        forged = forge(phone, epoch=1005, created_at=now - 60, key_epoch=1)
        await plant(cluster.nodes[0], profile, forged, stored_at=now - 60)
        async with cluster.statecache(laptop) as lap:
            got = as_latest(await collect(lap.onboard()))
            assert got[(GROUP, "group_state")][0] == 5
            assert not lap.report.complete
            [gap] = lap.report.incomplete
            assert (gap.group_id, gap.kind, gap.mls_epoch) == (GROUP, "group_state", 1005)
            assert cluster.nodes[0].url in gap.nodes
            epoch6 = state(6)
            await admin.publish([epoch6])
            got = as_latest(await collect(lap.sync()))
            assert got[(GROUP, "group_state")] == (6, epoch6.plaintext)
            assert lap.state.known[(GROUP, "group_state")].mls_epoch == 6


async def test_an_expired_author_and_one_node_cannot_add_a_state(cluster: Cluster) -> None:
    """The phone's certificate expired; it signs epoch 9 dated within its validity and node
    1 stores it with a receipt of the same time. The honest nodes refuse an expired author
    at their own clock, so no second receipt exists: never the group's state."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        phone = await cluster.enrol(admin, "phone", valid_for=DAY)
        async with cluster.statecache(phone) as ph:
            await ph.publish([state(5)])
            cluster.clock.advance(2 * DAY)
            with pytest.raises(ThresholdNotMet):
                await ph.publish([state(9)])
        then = int(cluster.clock()) - DAY - 600
        await plant(cluster.nodes[0], profile, forge(phone, epoch=9, created_at=then), then)
        laptop = await cluster.enrol(admin, "laptop")
        async with cluster.statecache(laptop) as lap:
            got = as_latest(await collect(lap.onboard()))
            assert got[(GROUP, "group_state")][0] == 5
            assert [g.mls_epoch for g in lap.report.incomplete] == [9]


async def test_a_future_dated_snapshot_is_refused_and_its_node_named(cluster: Cluster) -> None:
    """A snapshot dated a day ahead, which no honest node stores (they refuse what is dated
    beyond their clock's window), served by node 1: that node is a suspect, the read goes on
    from the others."""
    profile = await cluster.account()
    now = int(cluster.clock())
    async with cluster.statecache(profile) as admin:
        await admin.publish([state(5)])
        phone = await cluster.enrol(admin, "phone")
        future = forge(phone, epoch=6, created_at=now + DAY)
        await plant(cluster.nodes[0], profile, future, stored_at=now + DAY)
        laptop = await cluster.enrol(admin, "laptop")
        async with cluster.statecache(laptop) as lap:
            got = as_latest(await collect(lap.onboard()))
            assert got[(GROUP, "group_state")][0] == 5
            suspect = lap.report.nodes[cluster.nodes[0].url]
            assert suspect.state.value == "suspect" and "future" in (suspect.message or "")


# writes that retry safely


async def test_a_publish_that_reached_one_node_is_retried_as_the_same_bytes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two of three nodes down: the publish stores on one node and fails. The retry (a new
    process: the outbox is in the home) resends the same sealed bytes; node 1 answers
    duplicate, the others store them; a fresh device and the publisher read one epoch 5."""
    profile = await cluster.account()
    home = tmp_path / "home" / "state.json"
    item = state(5)
    for node in cluster.nodes[1:]:
        await node.stop()
    async with cluster.statecache(profile, state_path=home) as admin:
        with pytest.raises(ThresholdNotMet):
            await admin.publish([item])
    assert len(list((home.parent / "outbox").glob("*.snap"))) == 1
    for node in cluster.nodes[1:]:
        await node.start()
    async with cluster.statecache(profile, state_path=home) as admin:
        await admin.publish([item])
        laptop = await cluster.enrol(admin, "laptop")
        assert list((home.parent / "outbox").glob("*.snap")) == []
        assert as_latest(await collect(admin.sync())) == {}
    async with cluster.statecache(laptop) as lap:
        got = as_latest(await collect(lap.onboard()))
        assert got[(GROUP, "group_state")] == (5, item.plaintext)
        assert lap.report.complete
        digests = {i.digest for n in lap.nodes for i in (await n.list_snapshots(data=False)).items}
        assert len(digests) == 1  # node 1 held it: one seal, everywhere


async def test_other_content_at_a_published_epoch_is_a_conflict(cluster: Cluster) -> None:
    """It used to count as a duplicate: exit 0, the new state silently dropped."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = state(5)
        await admin.publish([first])
        assert (await admin.publish([first])).duplicates == 1
        with pytest.raises(ContentConflict, match="epoch 5"):
            await admin.publish([state(5)])


async def test_a_superseded_outbox_entry_is_deleted(cluster: Cluster, tmp_path: Path) -> None:
    """Epoch 5 reached one node only and stays in the outbox; epoch 6, once confirmed,
    deletes it (an older state must not linger on disk)."""
    profile = await cluster.account()
    home = tmp_path / "home" / "state.json"
    for node in cluster.nodes[1:]:
        await node.stop()
    async with cluster.statecache(profile, state_path=home) as admin:
        with pytest.raises(ThresholdNotMet):
            await admin.publish([state(5)])
        for node in cluster.nodes[1:]:
            await node.start()
        await admin.publish([state(6)])
    assert list((home.parent / "outbox").glob("*")) == []


# nothing known that was not delivered


async def test_a_snapshot_the_caller_did_not_take_is_read_again(cluster: Cluster) -> None:
    """The caller fails on the snapshot it was handed (an --out that cannot be written):
    the device does not count it as held, and the next read delivers it."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        item = state(5)
        await admin.publish([item])
        laptop = await cluster.enrol(admin, "laptop")
    async with cluster.statecache(laptop) as lap:
        reading = lap.onboard()
        with pytest.raises(OSError):
            async for _ in reading:
                raise OSError("disk full")
        await reading.aclose()  # type: ignore[attr-defined]
        assert (GROUP, "group_state") not in lap.state.known
        got = as_latest(await collect(lap.sync()))
        assert got[(GROUP, "group_state")] == (5, item.plaintext)


async def test_a_sync_with_the_only_up_to_date_node_down_is_incomplete(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Node 3 was down while the admin revoked a tablet (a new key epoch, the laptop granted
    it again) and published epoch 6. With node 1 down when the laptop syncs, only node 2
    holds the laptop's new grant: it cannot get the new key, cannot open epoch 6, and the
    sync used to exit 0 with that only under `suspects`. Now the read is incomplete, naming
    the label, and a later sync with every node back delivers epoch 6."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        await admin.publish([state(5)])
        laptop = await cluster.enrol(admin, "laptop")
        tablet = await cluster.enrol(admin, "tablet")
        home = tmp_path / "laptop.json"
        async with cluster.statecache(laptop, state_path=home) as lap:
            await collect(lap.onboard())
        await cluster.nodes[2].stop()
        await admin.revoke(tablet.device.device_id)
        epoch6 = state(6)
        await admin.publish([epoch6])
    await cluster.nodes[2].start()
    await cluster.nodes[0].stop()
    async with cluster.statecache(laptop, state_path=home) as lap:
        got = as_latest(await collect(lap.sync()))
        assert (GROUP, "group_state") not in got
        assert not lap.report.complete
        gaps = {(g.group_id, g.label) for g in lap.report.incomplete}
        assert (GROUP, "account") in gaps  # and, node 3 being behind, too few clean nodes
        assert gaps <= {(GROUP, "account"), (None, None)}
    await cluster.nodes[0].start()
    async with cluster.statecache(laptop, state_path=home) as lap:
        got = as_latest(await collect(lap.sync()))
        assert got[(GROUP, "group_state")] == (6, epoch6.plaintext)
        assert lap.report.complete


async def test_snapshots_stored_before_receipts_existed_are_read(cluster: Cluster) -> None:
    """A node from before receipts stored no `at`, `rc` or `cert`: each node now receipts
    such a snapshot when it first lists it, so a fresh device confirms it from M nodes'
    own receipts (fetching it from a second node), and reads it complete."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        item = state(5)
        await admin.publish([item])
        laptop = await cluster.enrol(admin, "laptop")
    account = profile.account_id.hex()
    for node in cluster.nodes:
        redis = node.storage._r  # rewinding records to the old format
        for key in await redis.keys(f"sc:{{{account}}}:snap:*"):
            await redis.hdel(key, "at", "rc", "cert")
    async with cluster.statecache(laptop) as lap:
        got = as_latest(await collect(lap.onboard()))
        assert got[(GROUP, "group_state")] == (5, item.plaintext)
        assert lap.report.complete


async def test_a_tree_the_caller_did_not_take_is_rebuilt_by_the_next_read(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Tree pieces pass under the cursor before their tree is handed over: had they counted
    as held then, a caller that failed on the tree would never get it again."""
    from client_sdk.trees import OpenedTree, TreeInput
    from tests.client_sdk.test_tree_sync import tree_group

    profile = await cluster.account()
    group_id, group = tree_group("undelivered tree", 20)
    home = tmp_path / "laptop.json"
    async with cluster.statecache(profile) as admin:
        await admin.publish([TreeInput(group_id, 1, group.tree, group.suite)])
        group.commit()
        laptop = await cluster.enrol(admin, "laptop")
        async with cluster.statecache(laptop, state_path=home) as lap:
            await collect(lap.onboard())  # a complete read: cursors and labels saved
        await admin.publish([TreeInput(group_id, 2, group.tree, group.suite)])
    async with cluster.statecache(laptop, state_path=home) as lap:
        with pytest.raises(OSError):
            async for snap in lap.sync():
                if isinstance(snap, OpenedTree):
                    raise OSError("disk full")
    async with cluster.statecache(laptop, state_path=home) as lap:
        trees = [t for t in await collect(lap.sync()) if isinstance(t, OpenedTree)]
        assert [(t.group_id, t.mls_epoch) for t in trees] == [(group_id, 2)]
        assert lap.report.complete and not lap.state.pending


async def test_an_author_equivocating_is_named_and_the_read_goes_on(cluster: Cluster) -> None:
    """The admin device signs two different states for epoch 5; one lying node helps the
    second to M receipts. Two confirmed snapshots that say different things at one epoch:
    the group is incomplete, naming the author, the device keeps the state it holds, and
    every other group is still read (a fork used to stop the whole read)."""
    profile = await cluster.account()
    other = hashlib.sha256(b"another group").digest()[:16]
    async with cluster.statecache(profile) as admin:
        await admin.publish([state(5), SnapshotInput(other, "group_state", 1, b"other")])
        laptop = await cluster.enrol(admin, "laptop")
        kek = admin._keyring.newest("account")  # the author's own key: it may seal anything
    assert kek is not None
    now = int(cluster.clock())
    second = pre.seal_snapshot(
        kek, profile.device, group_id=GROUP, kind="group_state", mls_epoch=5,
        plaintext=b"a second state for epoch 5", now=now,
    )  # fmt: skip
    await cluster.nodes[2].storage.delete_snapshots(
        profile.account_id.hex(), GROUP,
        [i.seq for i in (await _listing(cluster.nodes[2], profile)) if i.group_id == GROUP],
    )  # fmt: skip
    await plant(cluster.nodes[2], profile, second, stored_at=now)
    liar = load_or_create_identity(cluster.nodes[0].data_dir)
    await cluster.nodes[2].storage.put_receipts(
        profile.account_id.hex(), group_id=GROUP, kind="group_state", mls_epoch=5,
        digest=second.digest,
        receipts=liar.sign_snapshot_receipt(
            account_id=profile.account_id, digest=second.digest, stored_at=now
        ).to_bytes(),
    )  # fmt: skip
    async with cluster.statecache(laptop) as lap:
        got = as_latest(await collect(lap.onboard()))
        assert got[(other, "group_state")] == (1, b"other")
        assert got[(GROUP, "group_state")][0] == 5
        [fork] = [g for g in lap.report.incomplete if g.group_id == GROUP]
        assert profile.device.device_id.hex() in fork.reason and "different content" in fork.reason


async def _listing(node: Node, profile: Profile) -> list[object]:
    rows, _, _ = await node.storage.list_snapshots(
        profile.account_id.hex(), descending=False, start=None, limit=100, group_id=None
    )
    return rows


async def test_an_onboarding_downloads_each_snapshot_about_once(cluster: Cluster) -> None:
    """Tree pieces wait, pending, for their tree; a pending (group, kind) is looked for
    again on every node. Looking for the pieces the same read had just collected cost an
    onboarding each tree group's newest page from every node again (4x the bytes)."""
    from client_sdk.trees import TreeInput
    from tests.client_sdk.test_tree_sync import tree_group

    profile = await cluster.account()
    trees = [tree_group(f"once {i}", 30) for i in range(8)]
    async with cluster.statecache(profile) as admin:
        await admin.publish([TreeInput(g, 1, t.tree, t.suite) for g, t in trees])
        laptop = await cluster.enrol(admin, "laptop")
        published = sum(
            len(i.snapshot or b"") for i in (await admin.nodes[0].list_snapshots()).items
        )
    async with cluster.statecache(laptop) as lap:
        await collect(lap.onboard())
        assert lap.report.trees == len(trees)
        assert lap.bytes_received < 2 * published, (lap.bytes_received, published)
