"""Red-team tests of `StatecacheStore`: another device of the account, lying nodes, and
hostile local files, with real nodes and real mls-rs clients."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pre
from client_sdk import SnapshotInput, StatecacheError
from client_sdk.mlsrs import OWN_STATE_KIND, StatecacheStore
from tests.client_sdk.conftest import Cluster
from tests.mlsrs.members import MemoryStorage, add, client, commit


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
