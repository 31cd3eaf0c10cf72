"""Red-team tests of `StatecacheStore`: another device of the account, lying nodes, and
hostile local files, with real nodes and real mls-rs clients."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

import pre
from client_sdk import SnapshotInput, StatecacheError
from client_sdk.mlsrs import OWN_STATE_KIND, StatecacheStore
from tests.client_sdk.conftest import Cluster
from tests.mlsrs.members import MemoryStorage, add, client, commit, read, send


async def test_another_device_cannot_squat_this_devices_backup_address(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The laptop holds the account KEK and can derive the phone's address of a group it
    shares (device ids are in the directory). Were it able to publish an `mls_state` there
    at a higher epoch, the phone's every later flush would be refused (one batch) and a
    restore would find that group's backup hidden below it. Nodes refuse it."""
    profile = await cluster.account()
    home = tmp_path / "phone"
    store = StatecacheStore(home, profile.device)
    alice = client(b"alice", store)
    one, two = alice.create_group(b"one"), alice.create_group(b"two")
    one.write_to_storage()
    two.write_to_storage()
    bob = client(b"bob", MemoryStorage())
    bob_one, bob_two = add(one, bob), add(two, bob)
    async with cluster.statecache(profile) as sc:
        assert (await store.flush(sc)) is not None
        laptop = await cluster.enrol(sc)
    squatted = pre.own_state_address(profile.device.device_id, b"one")
    async with cluster.statecache(laptop) as evil:
        with pytest.raises(StatecacheError, match="another device"):
            await evil.publish([SnapshotInput(squatted, OWN_STATE_KIND, 1000, b"not yours")])

    commit(bob_one, one)
    commit(bob_two, two)
    async with cluster.statecache(profile) as sc:  # a read state that remembers nothing
        report = await store.flush(sc)
        assert report is not None and report.stored == 2 and store.pending() == 0
        shutil.rmtree(home)
        wiped = StatecacheStore(home, profile.device)
        assert sorted(await wiped.restore(sc)) == [b"one", b"two"]
        assert (wiped.epoch_of(b"one"), wiped.epoch_of(b"two")) == (2, 2)


@pytest.mark.parametrize("remembers", [True, False])
async def test_a_node_replaying_an_older_backup_does_not_roll_a_restore_back(
    cluster: Cluster, tmp_path: Path, remembers: bool
) -> None:
    """One liar (M - 1) serves the older backup of each group it saw listed; the restore
    installs the newest all the same, whether the device's read state remembers publishing
    it or was lost too, and the liar is reported."""
    proxy = await cluster.proxy(0)
    profile = await cluster.account([proxy.url, *cluster.urls[1:]])
    home = tmp_path / "phone"
    store = StatecacheStore(home, profile.device)
    group = client(b"alice", store).create_group(b"g")
    group.write_to_storage()
    bob = add(group, client(b"bob", MemoryStorage()))
    async with cluster.statecache(profile) as sc:
        await store.flush(sc)  # epoch 1
        async with cluster.statecache(profile) as other:  # the liar lists epoch 1
            _ = [s async for s in other.onboard()]
        for _ in range(2):
            commit(bob, group)
        await store.flush(sc)  # epoch 3
        proxy.roll_back = True
        shutil.rmtree(home)
        wiped = StatecacheStore(home, profile.device)
        reader = sc if remembers else cluster.statecache(profile)
        async with contextlib.AsyncExitStack() as stack:
            if reader is not sc:
                await stack.enter_async_context(reader)
            assert await wiped.restore(reader) == [b"g"]
    assert proxy.tampered > 0
    assert wiped.epoch_of(b"g") == 3


async def test_restored_then_written_again_at_its_epoch_publishes_nothing_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Restored at epoch E, the group ratchets within E (a message read): the backup of E
    is the one on the nodes; only the next epoch is published, once, across a restart."""
    profile = await cluster.account()
    home = tmp_path / "phone"
    store = StatecacheStore(home, profile.device)
    group = client(b"alice", store).create_group(b"g")
    group.write_to_storage()
    bob = add(group, client(b"bob", MemoryStorage()))
    async with cluster.statecache(profile) as sc:
        await store.flush(sc)
        shutil.rmtree(home)
        store = StatecacheStore(home, profile.device)
        assert await store.restore(sc) == [b"g"]
        group = client(b"alice", store).load_group(b"g")
        read(group, send(bob, b"within epoch 1"))
        store = StatecacheStore(home, profile.device)  # a restart too
        assert store.pending() == 0 and await store.flush(sc) is None
        group = client(b"alice", store).load_group(b"g")
        commit(group, bob)
        report = await store.flush(sc)
        assert report is not None and (report.stored, report.duplicates) == (1, 0)
