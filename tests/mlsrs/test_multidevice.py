"""The multi-device flow end to end with real mls-rs clients: a user in several groups
adds a new device to all of them; the Welcomes go out without the tree; the new device
onboards from statecache, joins every group with the cached trees and reads the next
message in each. Real nodes, real Redis, real Umbral, real mls-rs."""

from __future__ import annotations

from pathlib import Path

import mls_rs_uniffi as mls
import pytest

from client_sdk.device import Statecache
from client_sdk.errors import TreeUnavailable
from client_sdk.keystore import Profile
from client_sdk.mlsrs.flows import JoinFailed, Welcome, commit_tree, join_all
from client_sdk.mlsrs.store import StatecacheStore
from client_sdk.outcomes import NodeState
from tests.client_sdk.conftest import Cluster
from tests.mlsrs.world import User, apply, group_id, new_client

GROUPS = 6


class Phone:
    """Alice's first device: in every group, backed up to statecache."""

    def __init__(self, directory: Path, device) -> None:
        self.store = StatecacheStore(directory, device)
        self.client = new_client("alice-phone", self.store)
        self.groups: dict[bytes, mls.Group] = {}

    def create(self, others: list[User]) -> bytes:
        gid = group_id()
        group = self.client.create_group(gid)
        group.write_to_storage()
        out = apply(group, group.add_members([u.key_package() for u in others]))
        for user in others:
            user.join(gid, out, group.export_tree())
        self.groups[gid] = group
        return gid


async def _world(cluster: Cluster, tmp_path: Path, sc) -> tuple[Phone, list[User]]:
    bob, carol, dave = User("bob"), User("carol"), User("dave")
    phone = Phone(tmp_path / "phone", sc.profile.device)
    for g in range(GROUPS):
        phone.create([bob, carol, dave][: 1 + g % 3])
    return phone, [bob, carol, dave]


def _device(name: str, tmp_path: Path, profile: Profile) -> mls.Client:
    return new_client(name, StatecacheStore(tmp_path / name, profile.device))


def _members(users: list[User], gid: bytes) -> list[User]:
    return [u for u in users if gid in u.groups]


async def _add_device(phone: Phone, sc, laptop: mls.Client, users: list[User]) -> list[Welcome]:
    """The phone commits the laptop into every group, publishes each new epoch's tree and
    sends each Welcome without it; the other members process the commit."""
    welcomes, trees = [], []
    for gid, group in phone.groups.items():
        out = apply(group, group.add_members([laptop.generate_key_package_message()]))
        assert out.ratchet_tree is not None  # the tree a Welcome would otherwise carry
        trees.append(commit_tree(phone.store, group, gid))
        for user in _members(users, gid):
            user.receive(gid, out.commit_message)
        welcomes.append(Welcome(gid, trees[-1].mls_epoch, out.welcome_message.to_bytes()))
    report = await sc.publish(trees)
    assert report.stored == len(trees)
    return welcomes


async def _update_all(phone: Phone, sc: Statecache, users: list[User]) -> None:
    """The phone commits an update in every group and publishes the new trees."""
    trees = []
    for gid, group in phone.groups.items():
        out = apply(group, group.commit())
        for user in _members(users, gid):
            user.receive(gid, out.commit_message)
        trees.append(commit_tree(phone.store, group, gid))
    await sc.publish(trees)


async def test_a_new_device_joins_every_group_from_welcomes_without_the_tree(
    cluster: Cluster, tmp_path: Path
) -> None:
    admin = await cluster.account()
    async with cluster.statecache(admin) as sc:
        phone, users = await _world(cluster, tmp_path, sc)
        laptop_profile = await cluster.enrol(sc)
        laptop = _device("alice-laptop", tmp_path, laptop_profile)
        welcomes = await _add_device(phone, sc, laptop, users)
        # Sent without the tree: each Welcome is smaller than the tree it leaves out.
        for w, gid in zip(welcomes, phone.groups, strict=True):
            assert len(w.message) < len(phone.groups[gid].export_tree().bytes)

    async with cluster.statecache(laptop_profile) as new_sc:
        _ = [s async for s in new_sc.onboard()]
        report = await join_all(new_sc, laptop, welcomes)
    assert set(report.groups) == set(phone.groups)
    for gid, group in report.groups.items():
        sender = _members(users, gid)[0]
        received = group.process_incoming_message(sender.send(gid, b"hello " + gid[:4]))
        assert received.data == b"hello " + gid[:4]
        # and the phone reads the laptop: one leaf each, both in the group
        reply = group.encrypt_application_message(b"from the laptop")
        assert phone.groups[gid].process_incoming_message(reply).data == b"from the laptop"


async def test_a_late_welcome_joins_with_the_tree_of_its_own_epoch(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The group moved on (the phone committed twice more) before the laptop took its
    Welcome: the tree of the Welcome's epoch is still served, and the laptop catches up
    by processing the later commits."""
    admin = await cluster.account()
    async with cluster.statecache(admin) as sc:
        phone, users = await _world(cluster, tmp_path, sc)
        laptop_profile = await cluster.enrol(sc)
        laptop = _device("alice-laptop", tmp_path, laptop_profile)
        welcomes = await _add_device(phone, sc, laptop, users)
        gid = welcomes[0].group_id
        group = phone.groups[gid]
        later = []
        for _ in range(2):
            out = apply(group, group.commit())
            later.append(out.commit_message)
            for user in _members(users, gid):
                user.receive(gid, out.commit_message)
            await sc.publish([commit_tree(phone.store, group, gid)])

    async with cluster.statecache(laptop_profile) as new_sc:
        _ = [s async for s in new_sc.onboard()]
        # A Welcome delivered with the wrong epoch fails cleanly in mls-rs, costing nothing.
        wrong = Welcome(gid, welcomes[0].mls_epoch + 1, welcomes[0].message)
        refused = await join_all(new_sc, laptop, [wrong])
        assert (refused.groups, refused.complete) == ({}, False)
        assert isinstance(refused.refused[gid], JoinFailed)
        assert "tree hash mismatch" in str(refused.refused[gid])
        # The right epoch: a tree two epochs behind the newest, kept for late Welcomes;
        # beside it, one whose epoch has no tree: it waits, the other joins.
        other = welcomes[1]
        early = Welcome(other.group_id, other.mls_epoch + 50, other.message)
        report = await join_all(new_sc, laptop, [welcomes[0], early])
        assert report.unavailable == {other.group_id: other.mls_epoch + 50}
        assert "not published yet, retry later" in report.unavailable_reason
        assert set(report.groups) == {gid} and not report.refused
        joined = report.groups[gid]
        for commit in later:
            joined.process_incoming_message(commit)
        sender = _members(users, gid)[0]
        assert joined.process_incoming_message(sender.send(gid, b"after")).data == b"after"

        # One for an epoch nobody published a tree for: a clear refusal.
        with pytest.raises(TreeUnavailable):
            await new_sc.tree_at(gid, welcomes[0].mls_epoch + 50)


@pytest.mark.parametrize("attack", ["roll_back", "drop_trees"])
async def test_a_node_serving_stale_trees_is_caught_and_the_join_completes(
    cluster: Cluster, tmp_path: Path, attack: str
) -> None:
    proxy = await cluster.proxy(0)
    urls = [proxy.url, *cluster.urls[1:]]
    admin = await cluster.account(urls)
    async with cluster.statecache(admin) as sc:
        phone, users = await _world(cluster, tmp_path, sc)
        laptop_profile = await cluster.enrol(sc)
        laptop = _device("alice-laptop", tmp_path, laptop_profile)
        # Each group's tree goes out at two epochs; the liar sees the older one listed
        # (a tablet onboards in between), then serves it in place of the newer.
        tablet_profile = await cluster.enrol(sc, name="tablet")
        await _add_device(phone, sc, _device("tablet", tmp_path, tablet_profile), users)
        async with cluster.statecache(tablet_profile) as tablet:
            _ = [s async for s in tablet.onboard()]
            # one more epoch (a patch), which the tablet reads too: the liar's stale patch
            await _update_all(phone, sc, users)
            _ = [s async for s in tablet.sync()]
        welcomes = await _add_device(phone, sc, laptop, users)

    if attack == "roll_back":
        proxy.roll_back = True
    else:
        proxy.drop = lambda item: item.get("kind", "").startswith("ratchet_tree")
    async with cluster.statecache(laptop_profile) as new_sc:
        _ = [s async for s in new_sc.onboard()]
        outcomes = new_sc.outcomes  # the onboarding's: the trees came with it
        report = await join_all(new_sc, laptop, welcomes)
    assert proxy.tampered > 0
    assert set(report.groups) == set(phone.groups)
    assert outcomes[proxy.url].state in (NodeState.BEHIND, NodeState.SUSPECT)


async def test_a_node_serving_a_stale_backup_is_caught_and_the_restore_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The phone backs up two epochs of each group; one node serves the older backup in
    place of the newer. The phone, its MLS data lost and its read state too (a new
    SyncState), restores the newest from the other nodes and names the liar."""
    proxy = await cluster.proxy(0)
    admin = await cluster.account([proxy.url, *cluster.urls[1:]])
    async with cluster.statecache(admin) as sc:
        phone, users = await _world(cluster, tmp_path, sc)
        await phone.store.flush(sc)
        tablet_profile = await cluster.enrol(sc, name="tablet")
        async with cluster.statecache(tablet_profile) as tablet:
            _ = [s async for s in tablet.onboard()]  # the liar sees the first backups
        await _update_all(phone, sc, users)
        await phone.store.flush(sc)
        newest = {gid: phone.store.epoch_of(gid) for gid in phone.groups}

    proxy.roll_back = True
    async with cluster.statecache(admin) as sc:  # no read state: it remembers nothing
        store = StatecacheStore(tmp_path / "restored", admin.device)
        restored = await store.restore(sc)
    outcomes = store.outcomes
    assert proxy.tampered > 0
    assert set(restored) == set(phone.groups)
    assert {gid: store.epoch_of(gid) for gid in restored} == newest
    assert outcomes[proxy.url].state in (NodeState.BEHIND, NodeState.SUSPECT)
    # and the restored state is the real one: it reads the next message in each group
    client = new_client("alice-phone", store)
    for gid in restored:
        sender = _members(users, gid)[0]
        received = client.load_group(gid).process_incoming_message(sender.send(gid, b"again"))
        assert received.data == b"again"
